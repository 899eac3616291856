//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/integration/samples"
)

// The floor under an ADD on this machine (make bench, issue 13): what no
// plugin written in Go and making a macvlan can go below.
//
//   - "empty Go exec": fork, exec and reap of a Go program whose main
//     returns at once;
//   - "macvlan into netns": one `ip link add ... netns C type macvlan`, the
//     link made straight inside the container as maclan makes it (ip is a
//     C program: its own start-up is a fraction of a Go one's);
//   - "macvlan add + move": `ip link add` in the host, then `ip link set
//     netns`, as the reference macvlan plugin does it.
//
// bench/report puts maclan's sequential ADD beside the sum of the first
// two. The three alternate, call by call.
const (
	floorEmptyGo = "empty Go exec"
	floorInto    = "macvlan into netns"
	floorMove    = "macvlan add + move"
)

func benchFloor(t *testing.T, rep *benchReport, n int) {
	w := rep.workload("floor")
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("go", "build", "-C", dir, "-trimpath", "-ldflags", "-s -w", "-o", empty, "main.go").CombinedOutput(); err != nil {
		t.Fatalf("build the empty Go program: %v\n%s", err, out)
	}
	c := benchContainer(t)
	const link = "mlvfloor"
	timed := func(op string, argv ...[]string) {
		var wall, cpu time.Duration
		for _, a := range argv {
			cmd := exec.Command(a[0], a[1:]...)
			start := time.Now()
			if err := theLab.inHost(cmd.Run); err != nil {
				t.Fatalf("%v: %v", a, err)
			}
			wall += time.Since(start)
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
		}
		samples.AddTo(w.Ops, op, wall, cpu)
	}
	remove := func() { theLab.ip(t, "-n", c.name, "link", "del", link) }
	for i := range n {
		steps := []func(){
			func() { timed(floorEmptyGo, []string{empty}) },
			func() {
				timed(floorInto, []string{"ip", "link", "add", link, "link", masterIf, "netns", c.name, "type", "macvlan", "mode", "bridge"})
				remove()
			},
			func() {
				timed(floorMove,
					[]string{"ip", "link", "add", link, "link", masterIf, "type", "macvlan", "mode", "bridge"},
					[]string{"ip", "link", "set", link, "netns", c.name})
				remove()
			},
		}
		for k := range steps {
			steps[(i+k)%len(steps)]()
		}
	}
	if _, err := c.nl.LinkByName(link); err == nil {
		t.Errorf("%s left in %s", link, c.name)
	}
}
