//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fault tests of the cluster-wide store (issue 17): three etcd members
// with TLS on the lab LAN (see etcd_cluster_helpers_test.go), three
// simulated hosts adding containers at once, and one fault injected in the
// middle of the burst. Each test checks the same outcome: every ADD either
// succeeds or fails with code 11 naming the cause, and a failed one leaves
// no link and, once etcd has let its reservations expire, no lease; the
// cluster recovers (STATUS 0 and a new ADD succeeds on every host); no
// address is held twice; fsck is clean; DEL of everything works and leaves
// no lease. The times are logged, never compared against a threshold.

const (
	faultHosts   = 3
	faultPerHost = 10
)

// faultCase is one fault: inject runs in the middle of the burst and
// returns when the fault is in place (or, for a fault of fixed length, over);
// heal, if set, runs after the burst and removes it. Recovery is timed from
// the end of heal, or of inject if there is no heal.
type faultCase struct {
	opts   clusterOpts
	net    func(e *clusterNet) // adjusts the network, if set
	inject func(t *testing.T, f *faultLab)
	during func(t *testing.T, f *faultLab) // after the burst, before heal
	heal   func(t *testing.T, f *faultLab)
}

type faultLab struct {
	c     *labCluster
	e     *clusterNet
	hosts []*labHost
}

// faultRow is the closing note's table row of one fault.
type faultRow struct {
	calls, ok, failed11, dups, leftovers int
	recovery                             time.Duration
}

func runFault(t *testing.T, name string, fc faultCase) {
	c := startLabCluster(t, fc.opts)
	f := &faultLab{c: c, e: c.newNet()}
	if fc.net != nil {
		fc.net(f.e)
	}
	var all []*etcdAttachment
	for i := range faultHosts {
		h := newSimHost(t, i)
		f.hosts = append(f.hosts, h)
		all = append(all, f.e.attachments(t, h, faultPerHost)...)
	}
	started := time.Now()
	burst(all, 3, func() { fc.inject(t, f) })
	t.Logf("%s: burst of %d ADDs over in %s", name, len(all), time.Since(started).Round(time.Millisecond))
	row := faultRow{calls: len(all)}
	var ok []*etcdAttachment
	for _, at := range all {
		switch {
		case at.err == nil:
			ok = append(ok, at)
		case cniCode(at.err) == 11:
			row.failed11++
			t.Logf("ADD %s on %s: %v", at.ctr.name, at.h.name, at.err)
			if msg := at.err.Error(); !strings.Contains(msg, "etcd") && !strings.Contains(msg, "lock") {
				t.Errorf("ADD %s: %v names neither etcd nor the host lock", at.ctr.name, at.err)
			}
			wantOnlyLoopback(t, at.ctr)
		default:
			t.Errorf("ADD %s on %s: %v (code %d), want success or code 11", at.ctr.name, at.h.name, at.err, cniCode(at.err))
		}
	}
	row.ok = len(ok)
	if fc.during != nil {
		fc.during(t, f)
	}
	if fc.heal != nil {
		fc.heal(t, f)
	}
	healed := time.Now()
	ok = append(ok, f.recover(t)...)
	row.recovery = time.Since(healed)
	row.dups, row.leftovers = f.settle(t, ok)
	t.Logf("fault-row %s: calls %d, succeeded %d, failed with 11 %d, duplicates %d, leftovers %d, recovery %s",
		name, row.calls, row.ok, row.failed11, row.dups, row.leftovers, row.recovery.Round(10*time.Millisecond))
	if row.ok+row.failed11 != row.calls {
		t.Errorf("%d ADDs neither succeeded nor failed with 11", row.calls-row.ok-row.failed11)
	}
}

// recover polls until STATUS is 0 and a new ADD succeeds on every host (a
// hang guard of 2 minutes) and returns those ADDs.
func (f *faultLab) recover(t *testing.T) []*etcdAttachment {
	t.Helper()
	var probes []*etcdAttachment
	deadline := time.Now().Add(2 * time.Minute)
	for _, h := range f.hosts {
		at := f.e.attachments(t, h, 1)[0]
		for {
			if at.err = at.status(); at.err == nil {
				if at.add(); at.err == nil {
					break
				}
			}
			if code := cniCode(at.err); code != 11 && code != 50 {
				t.Fatalf("recovery on %s: %v (code %d), want success, 11 or 50", h.name, at.err, code)
			}
			if time.Now().After(deadline) {
				t.Fatalf("no recovery on %s within 2 minutes: %v", h.name, at.err)
			}
			time.Sleep(100 * time.Millisecond) // polling the cluster's recovery
		}
		probes = append(probes, at)
	}
	return probes
}

// settle checks the end state: after STATUS on every host (which settles
// each host's unsure commits) and the expiry of dropped reservations, etcd
// holds exactly the successful ADDs' leases, no address twice; fsck is
// clean; DEL of everything leaves no lease. It returns the duplicates and
// the leftovers (leases no successful ADD holds).
func (f *faultLab) settle(t *testing.T, ok []*etcdAttachment) (dups, leftovers int) {
	t.Helper()
	want := map[string]string{}
	for _, at := range ok {
		ip := at.ip(t)
		if other, dup := want[ip]; dup {
			dups++
			t.Errorf("%s handed to both %s and %s", ip, other, at.ctr.name)
		}
		want[ip] = at.ctr.name
	}
	for _, h := range f.hosts {
		at := f.e.attachments(t, h, 1)[0]
		if err := at.status(); err != nil {
			t.Errorf("STATUS on %s after recovery: %v", h.name, err)
		}
	}
	leftovers = wantSettledLeases(t, func() map[string]string { return f.e.leases(t, f.hosts[0]) }, want)
	if out, err := f.e.cli(t, f.hosts[1], "fsck"); err != nil || !strings.Contains(out, " 0 problems") {
		t.Errorf("fsck after recovery: %v\n%s", err, out)
	}
	for _, at := range ok {
		if err := at.del(); err != nil {
			t.Errorf("DEL %s on %s: %v", at.ctr.name, at.h.name, err)
		}
	}
	if held := f.e.leases(t, f.hosts[2]); len(held) != 0 {
		t.Errorf("leases left after DEL of everything: %v", held)
	}
	return dups, leftovers
}

// statusCodes runs STATUS once on every host.
func (f *faultLab) statusCodes(t *testing.T) []uint {
	var codes []uint
	for _, h := range f.hosts {
		at := f.e.attachments(t, h, 1)[0]
		err := at.status()
		codes = append(codes, cniCode(err))
		if err != nil {
			t.Logf("STATUS on %s: %v", h.name, err)
		}
	}
	return codes
}

// outlast is how long a fault of fixed length lasts: longer than the
// network's requestTimeout (5 s), so that requests in flight time out.
const outlast = 7 * time.Second

// TestEtcdClusterLeaderKilled: the leader is killed (SIGKILL) mid-burst;
// the others elect a new one and the hosts carry on.
func TestEtcdClusterLeaderKilled(t *testing.T) {
	runFault(t, "leader killed", faultCase{
		inject: func(t *testing.T, f *faultLab) {
			killed := f.c.waitLeader(t)
			t.Logf("killing leader %s (pid %d)", f.c.Members[killed].Name(), f.c.Members[killed].Pid())
			f.c.Members[killed].Stop()
		},
		during: func(t *testing.T, f *faultLab) {
			t.Logf("new leader %s", f.c.Members[f.c.waitLeader(t)].Name())
		},
	})
}

// TestEtcdClusterMemberFrozen: the leader is frozen (SIGSTOP) for longer
// than requestTimeout mid-burst, as by a stalled disk, then continued.
func TestEtcdClusterMemberFrozen(t *testing.T) {
	runFault(t, "member frozen", faultCase{
		inject: func(t *testing.T, f *faultLab) {
			frozen := f.c.waitLeader(t)
			m := f.c.Members[frozen]
			t.Cleanup(func() { _ = m.Thaw() }) // killed with the cluster anyway
			t.Logf("freezing leader %s for %s", m.Name(), outlast)
			if err := m.Freeze(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(outlast) // the length of the fault, not a synchronisation
			if err := m.Thaw(); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestEtcdClusterHostPartitioned: one host is cut off from every member
// (its packets to them dropped in its namespace) mid-burst, for longer
// than requestTimeout, and then healed; the other hosts carry on.
func TestEtcdClusterHostPartitioned(t *testing.T) {
	cut := func(f *faultLab, op string) error {
		for _, ip := range f.c.ips {
			r := []string{"netns", "exec", f.hosts[0].ns.name, "iptables", op, "OUTPUT", "-d", ip, "-j", "DROP"}
			if err := run("ip", r...); err != nil {
				return err
			}
		}
		return nil
	}
	runFault(t, "host partitioned", faultCase{
		inject: func(t *testing.T, f *faultLab) {
			t.Cleanup(func() { _ = cut(f, "-D") }) // healed already: nothing to delete
			if err := cut(f, "-A"); err != nil {
				t.Fatal(err)
			}
			t.Logf("host %s cut off from etcd for %s", f.hosts[0].name, outlast)
			time.Sleep(outlast) // the length of the fault, not a synchronisation
			if err := cut(f, "-D"); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestEtcdClusterDiskFull: a member's data directory is a small tmpfs,
// filled mid-burst; the member fails its writes (etcd exits on a failed
// WAL or backend write) and the others carry on; then space is freed and
// the member restarted.
func TestEtcdClusterDiskFull(t *testing.T) {
	dir := t.TempDir()
	const victim = 0
	mnt := filepath.Join(dir, "m0")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	// The WAL (64 MB, preallocated), the next segment the WAL pipeline
	// preallocates beside it (64 MB more) and a few MB of database fit.
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=200m,mode=0700"); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	if err := os.Mkdir(filepath.Join(mnt, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	runFault(t, "disk full", faultCase{
		opts: clusterOpts{dataDir: func(i int) string {
			if i == victim {
				return filepath.Join(mnt, "data")
			}
			return ""
		}},
		inject: func(t *testing.T, f *faultLab) {
			n, err := fill(filler)
			t.Logf("member %s's disk filled (%d MB written); leader is %d", f.c.Members[victim].Name(), n>>20, f.c.leader())
			if err != nil {
				t.Fatal(err)
			}
		},
		during: func(t *testing.T, f *faultLab) {
			t.Logf("after the burst, member %s exited: %v", f.c.Members[victim].Name(), f.c.Members[victim].Exited())
		},
		heal: func(t *testing.T, f *faultLab) {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			if f.c.Members[victim].Exited() {
				f.c.restart(t, victim)
			}
		},
	})
}

// fill writes zeros to path until the file system is full.
func fill(path string) (int64, error) {
	fh, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer fh.Close() //nolint:errcheck // written, not read
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := fh.Write(buf)
		n += int64(k)
		if err != nil {
			if strings.Contains(err.Error(), "no space") {
				return n, nil
			}
			return n, fmt.Errorf("fill %s: %w", path, err)
		}
	}
}

// TestEtcdClusterQuorumLost: two of the three members are killed
// mid-burst; STATUS gives 50 on every host while quorum is lost; both are
// restarted, and STATUS gives 0.
func TestEtcdClusterQuorumLost(t *testing.T) {
	var down []int
	runFault(t, "quorum lost", faultCase{
		// Every queued ADD waits out requestTimeout once quorum is lost
		// (the member left is connected and answers nothing): a shorter
		// one keeps the test short; the outcome is the same.
		net: func(e *clusterNet) { e.requestTimeout = "2s" },
		inject: func(t *testing.T, f *faultLab) {
			down = []int{f.c.waitLeader(t)}
			down = append(down, (down[0]+1)%3)
			for _, i := range down {
				f.c.Members[i].Stop()
			}
			t.Logf("members %s and %s killed", f.c.Members[down[0]].Name(), f.c.Members[down[1]].Name())
		},
		during: func(t *testing.T, f *faultLab) {
			for i, code := range f.statusCodes(t) {
				if code != 50 {
					t.Errorf("STATUS on %s with quorum lost: code %d, want 50", f.hosts[i].name, code)
				}
			}
		},
		heal: func(t *testing.T, f *faultLab) { f.c.restart(t, down...) },
	})
}
