package main

import (
	"fmt"
	"image/color"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/maclan-cni/maclan/integration/samples"
)

// plotIPAM draws the median latency of each IPAM operation against the
// number of existing leases, both axes logarithmic (0 leases is drawn at 100,
// as the axis cannot show 0, and labelled so).
func plotIPAM(r *samples.IPAM, file string) error {
	p := plot.New()
	p.Title.Text = "IPAM alone: median latency per exec vs existing leases"
	p.X.Label.Text = "existing leases (first point: none)"
	p.Y.Label.Text = "median latency (ms)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker = leaseTicks{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())

	series := []struct {
		op    string
		label string
		color color.RGBA
		dash  bool
	}{
		{"maclan ADD", "maclan-ipam ADD", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255}, false},
		{"maclan DEL", "maclan-ipam DEL", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255}, true},
		{"reference ADD", "host-local ADD", color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 255}, false},
		{"reference DEL", "host-local DEL", color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 255}, true},
	}
	for i, s := range series {
		var pts plotter.XYs
		for _, sz := range r.Sizes {
			smp, ok := sz.Ops[s.op]
			if !ok {
				continue
			}
			x := float64(sz.Leases)
			if x < 100 {
				x = 100
			}
			pts = append(pts, plotter.XY{X: x, Y: float64(quantile(smp.WallUS, 0.5)) / float64(time.Millisecond)})
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.op, err)
		}
		line.Color, points.Color = s.color, s.color
		line.Width = vg.Points(1.5)
		if s.dash {
			line.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		points.Shape = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.CrossGlyph{}}[i]
		p.Add(line, points)
		p.Legend.Add(s.label, line, points)
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, file)
}

// leaseTicks labels the lease counts the bench uses.
type leaseTicks struct{}

func (leaseTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, v := range []struct {
		x     float64
		label string
	}{{100, "0"}, {1000, "1,000"}, {10000, "10,000"}, {50000, "50,000"}, {100000, "100,000"}} {
		if v.x >= lo && v.x <= hi {
			ts = append(ts, plot.Tick{Value: v.x, Label: v.label})
		}
	}
	return ts
}
