package ipamplugin

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/allocator"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/disk"
)

// conflictNet is a dual-stack network with conflict detection whose IPv4
// range is 10.9.0.10-10.9.0.29, with a disk store in a temporary directory.
func conflictNet(t *testing.T) (*ipamconf.Conf, store.Store) {
	t.Helper()
	dir := t.TempDir()
	conf, err := ipamconf.Parse([]byte(`{"cniVersion":"1.0.0","name":"probed","conflictDetection":true,"master":"eth0",
		"ipam":{"type":"maclan-ipam","dataDir":"`+dir+`","conflictLifetime":"1m","ranges":[
			[{"subnet":"10.9.0.0/24","rangeStart":"10.9.0.10","rangeEnd":"10.9.0.29"}],
			[{"subnet":"fd00:9::/64"}]]}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := disk.New(conf.DataDir, conf.Name, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() }) // nothing to check after the test
	return conf, st
}

// lan answers probes as a LAN would: the addresses in inUse by their MAC.
type lan struct {
	inUse  map[netip.Addr]string
	probes int
}

func (l *lan) owner(ip netip.Addr) (string, error) {
	l.probes++
	return l.inUse[ip], nil
}

// answerAll is a LAN where one device answers for every address.
type answerAll struct{ probes int }

func (a *answerAll) owner(netip.Addr) (string, error) {
	a.probes++
	return "02:00:00:00:0a:11", nil
}

// tryAdd allocates for the attachment and runs the conflict check on it, as
// add does with a prober.
func tryAdd(conf *ipamconf.Conf, st store.Store, id string, owner func(netip.Addr) (string, error)) ([]allocator.Allocation, error) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	alloc := newAllocator(conf, st, log)
	allocs, err := alloc.Allocate(ctx, id, "eth0", nil)
	if err != nil {
		return nil, err
	}
	c := conflictCheck{alloc: alloc, owner: owner, master: "eth0", lifetime: time.Duration(conf.ConflictLifetime), log: log}
	return c.run(ctx, id, "eth0", nil, allocs)
}

// leasesOf splits the store's leases into conflict records and the
// addresses of the attachment id.
func leasesOf(t *testing.T, st store.Store, id string) (conflicts []string, held []string) {
	t.Helper()
	err := store.WithLock(context.Background(), st, func() error {
		ls, err := st.List(context.Background())
		for _, l := range ls {
			switch {
			case l.Conflict != "":
				conflicts = append(conflicts, l.IP.String())
			case l.ContainerID == id:
				held = append(held, l.IP.String())
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return conflicts, held
}

// TestConflictCapAnswerAll: with a device answering every probe, an ADD
// records at most maxConflictsPerSet conflicts, then fails naming the MAC
// and the likely cause, holding nothing (its IPv6 address is given back).
// Before the cap an ADD probed and recorded 16 addresses, and with a
// smaller pool took every address of it.
func TestConflictCapAnswerAll(t *testing.T) {
	conf, st := conflictNet(t)
	rogue := &answerAll{}
	for attempt := 1; attempt <= 3; attempt++ {
		_, err := tryAdd(conf, st, "c1", rogue.owner)
		if err == nil {
			t.Fatalf("attempt %d: ADD succeeded, want a failure", attempt)
		}
		for _, want := range []string{"02:00:00:00:0a:11", "answering every probe", "giving up after 3", "range set 0", "ipam.conflictLifetime 1m0s"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("attempt %d: error %q does not mention %q", attempt, err, want)
			}
		}
		conflicts, held := leasesOf(t, st, "c1")
		if len(held) != 0 {
			t.Errorf("attempt %d: the failed ADD left leases %v", attempt, held)
		}
		if len(conflicts) != 3*attempt || rogue.probes != 3*attempt {
			t.Errorf("attempt %d: %d conflict records after %d probes, want %d of each", attempt, len(conflicts), rogue.probes, 3*attempt)
		}
	}
}

// TestConflictCapLetsRetriesProgress: a LAN with more devices in the range
// than the cap: the first ADD gives up after three, its retry goes on past
// them and succeeds; nothing is probed twice.
func TestConflictCapLetsRetriesProgress(t *testing.T) {
	conf, st := conflictNet(t)
	l := &lan{inUse: map[netip.Addr]string{}}
	for i, ip := range []string{"10.9.0.10", "10.9.0.11", "10.9.0.12", "10.9.0.13", "10.9.0.14"} {
		l.inUse[netip.MustParseAddr(ip)] = "02:00:00:00:0b:0" + string(rune('0'+i))
	}
	_, err := tryAdd(conf, st, "c1", l.owner)
	if err == nil || !strings.Contains(err.Error(), "10.9.0.10, 10.9.0.11, 10.9.0.12") || !strings.Contains(err.Error(), "02:00:00:00:0b:02") {
		t.Fatalf("first ADD: got %v, want a failure naming 10.9.0.10-12 and their MACs", err)
	}
	allocs, err := tryAdd(conf, st, "c1", l.owner)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if allocs[0].IP.String() != "10.9.0.15" {
		t.Errorf("retry got %s, want 10.9.0.15", allocs[0].IP)
	}
	if conflicts, _ := leasesOf(t, st, "c1"); len(conflicts) != 5 || l.probes != 6 {
		t.Errorf("%d conflict records after %d probes, want 5 records after 6 probes", len(conflicts), l.probes)
	}
}

// TestConflictLifetimeNeedsProbing: records expire only where an ADD
// would probe the address again.
func TestConflictLifetimeNeedsProbing(t *testing.T) {
	conf, _ := conflictNet(t)
	if got := conflictLifetime(conf); got != time.Minute {
		t.Errorf("with conflict detection: lifetime %s, want 1m", got)
	}
	off := *conf
	off.ConflictDetection = false
	if got := conflictLifetime(&off); got != 0 {
		t.Errorf("without conflict detection: lifetime %s, want 0 (records kept)", got)
	}
	inCtr := *conf
	inCtr.LinkInContainer = true
	if got := conflictLifetime(&inCtr); got != 0 {
		t.Errorf("with the master out of reach: lifetime %s, want 0 (records kept)", got)
	}
}
