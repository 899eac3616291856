package ipamplugin

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
)

// BenchmarkAddDel times ADD and DEL of the built binary, the way a runtime
// runs it (one process per call), on the directory store and on the etcd
// store (a local, single-member etcd) in the same run. It reports the
// median of each as add-ms and del-ms.
//
//	go test -run '^$' -bench AddDel -benchtime 200x ./plugins/maclan-ipam
func BenchmarkAddDel(b *testing.B) {
	srv := etcdtest.Start(b, etcdtest.Options{})
	stores := []struct{ name, conf string }{
		{"disk", netconf("1.1.0", b.TempDir(), dualStack, "")},
		{"etcd", etcdConf(b.TempDir(), srv.Endpoint(), "/bench")},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			adds := make([]time.Duration, 0, b.N)
			dels := make([]time.Duration, 0, b.N)
			t := &testing.T{}
			for i := 0; b.Loop(); i++ {
				id := fmt.Sprintf("bench%d", i)
				start := time.Now()
				if o := run(t, call{cmd: "ADD", id: id, conf: st.conf}); o.code != 0 {
					b.Fatalf("ADD: %s %s", o.stdout, o.stderr)
				}
				mid := time.Now()
				if o := run(t, call{cmd: "DEL", id: id, conf: st.conf}); o.code != 0 {
					b.Fatalf("DEL: %s %s", o.stdout, o.stderr)
				}
				adds, dels = append(adds, mid.Sub(start)), append(dels, time.Since(mid))
			}
			b.ReportMetric(median(adds), "add-ms")
			b.ReportMetric(median(dels), "del-ms")
		})
	}
}

func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[len(ds)/2]) / float64(time.Millisecond)
}
