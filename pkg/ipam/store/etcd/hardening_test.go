package etcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/ipam/store/etcdtest"
)

// hangGuard bounds a call that must finish on its own; it is not a
// performance threshold: a call that needs it has failed.
const hangGuard = time.Minute

// put writes raw keys, as another program sharing the prefix would.
func put(t *testing.T, s *Store, kvs map[string]string) {
	t.Helper()
	for k, v := range kvs {
		if _, err := s.cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
}

// wantKeys checks that every key of kvs is still there with its value.
func wantKeys(t *testing.T, s *Store, kvs map[string]string) {
	t.Helper()
	for k, v := range kvs {
		resp, err := s.cli.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != v {
			t.Errorf("key %s: got %v, want it kept with value %q", k, resp.Kvs, v)
		}
	}
}

// TestNextFreeStrayKeys: 300 keys that are not lease keys sort right
// after the key of the first candidate (more than a page of them). The
// old NextFree read the same page again and again; it must answer.
func TestNextFreeStrayKeys(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	s := open(t, testOptions(t, srv))
	defer s.Close() //nolint:errcheck // test
	locked(t, s, func() error { return s.Reserve(ctx, lease("10.0.0.1", "c1")) })
	stray := map[string]string{}
	for i := range 300 {
		stray[fmt.Sprintf("%s/other/%03d", s.leaseKey(netip.MustParseAddr("10.0.0.2")), i)] = "x"
		stray[fmt.Sprintf("%s-%03d", s.leaseKey(netip.MustParseAddr("10.0.0.3")), i)] = "y"
	}
	put(t, s, stray)
	gctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	tests := []struct{ from, to, want string }{
		{"10.0.0.1", "10.0.0.254", "10.0.0.2"},
		{"10.0.0.2", "10.0.0.254", "10.0.0.2"},
		{"10.0.0.3", "10.0.0.3", "10.0.0.3"},
		{"10.0.0.1", "10.0.0.1", ""}, // the only candidate is held
	}
	for _, tt := range tests {
		locked(t, s, func() error {
			got, err := s.NextFree(gctx, netip.MustParseAddr(tt.from), netip.MustParseAddr(tt.to))
			switch {
			case tt.want == "" && !errors.Is(err, store.ErrNotFound):
				t.Errorf("NextFree(%s, %s) = %v, %v; want ErrNotFound", tt.from, tt.to, got, err)
			case tt.want != "" && (err != nil || got.String() != tt.want):
				t.Errorf("NextFree(%s, %s) = %v, %v; want %s", tt.from, tt.to, got, err, tt.want)
			}
			return nil
		})
	}
	// An uppercase spelling of a held address's key is not its lease key.
	put(t, s, map[string]string{s.leasePrefix() + "4-0A000002": "z"})
	locked(t, s, func() error {
		if err := s.Reserve(ctx, lease("10.0.0.2", "c2")); err != nil {
			return err
		}
		got, err := s.NextFree(gctx, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.254"))
		if err != nil || got.String() != "10.0.0.3" {
			t.Errorf("NextFree after 10.0.0.2 was taken = %v, %v; want 10.0.0.3", got, err)
		}
		return nil
	})
	wantKeys(t, s, stray)
}

// TestManyRangeSets: one attachment with an address in each of 100 (and
// 130) range sets, and a cursor for each: the commit, GetByID and DEL
// need several transactions each. DEL used to call more than 60 index
// keys corruption.
func TestManyRangeSets(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	for _, n := range []int{100, 130} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := open(t, testOptions(t, srv))
			defer s.Close() //nolint:errcheck // test
			var want []netip.Addr
			locked(t, s, func() error {
				for i := range n {
					ip := netip.AddrFrom4([4]byte{10, byte(i), 0, 2})
					want = append(want, ip)
					if err := s.Reserve(ctx, lease(ip.String(), "c1")); err != nil {
						return err
					}
					if err := s.SetCursor(ctx, fmt.Sprintf("set%d", i), ip); err != nil {
						return err
					}
				}
				return nil
			})
			locked(t, s, func() error {
				got, err := s.GetByID(ctx, "c1", "eth0")
				if len(got) != n {
					t.Errorf("GetByID = %d leases, want %d", len(got), n)
				}
				return err
			})
			// One lease re-indexed by hand (as fsck does): its index key is
			// newer than the lease, so its chunk takes the slow path.
			ik := s.attachKey("c1", "eth0", want[n-1])
			if _, err := s.cli.Delete(ctx, ik); err != nil {
				t.Fatal(err)
			}
			put(t, s, map[string]string{ik: ""})
			locked(t, s, func() error {
				got, err := s.ReleaseByID(ctx, "c1", "eth0")
				slices.SortFunc(got, netip.Addr.Compare)
				if !slices.Equal(got, want) {
					t.Errorf("ReleaseByID = %d addresses %v, want the %d held", len(got), got, n)
				}
				return err
			})
			locked(t, s, func() error {
				rep, err := s.Fsck(ctx, false)
				if rep.Leases != 0 || len(rep.Problems) != 0 {
					t.Errorf("fsck after DEL = %+v, want nothing left", rep)
				}
				return err
			})
		})
	}
}

// TestFsckRepairLeavesForeignKeys: another program's keys under the
// network's prefix (a shared prefix, or a second maclan store whose prefix
// is nested in this network's keys) are reported and left alone by
// fsck --repair, which still repairs the keys of maclan's own shapes.
func TestFsckRepairLeavesForeignKeys(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	opts := testOptions(t, srv)
	s := open(t, opts)
	defer s.Close() //nolint:errcheck // test
	// A maclan store nested in net1's keys: prefix <prefix>/net1, network
	// "lease", whose keys are all under net1's lease/ prefix.
	nopts := opts
	nopts.Prefix, nopts.LockDir = opts.Prefix+"/net1", t.TempDir()
	nested, err := New("lease", nopts)
	if err != nil {
		t.Fatal(err)
	}
	defer nested.Close() //nolint:errcheck // test
	locked(t, nested, func() error {
		return errors.Join(nested.Reserve(ctx, lease("10.0.0.2", "n1")), nested.SetCursor(ctx, "0", netip.MustParseAddr("10.0.0.2")))
	})
	locked(t, s, func() error { return s.Reserve(ctx, lease("10.0.0.2", "c1")) })
	root := s.Root()
	foreign := map[string]string{
		root + "config":                         "someone else's",
		root + "lease/4-0a000002/meta":          "x",
		root + "lease/4-0A000003":               "x", // not the canonical spelling
		root + "lease/notes":                    "x",
		root + "attach/c1=eth0/4-0a000002/meta": "x",
		root + "attach/c1=eth0/readme":          "x",
		root + "attach/nothing":                 "x",
		root + "cursor/a/b":                     "nowhere",
	}
	put(t, s, foreign)
	for _, p := range []string{nested.leasePrefix(), nested.attachRoot(), nested.Root() + "cursor/"} {
		resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("nested store keys under %s = %v, %v; want one", p, resp, err)
		}
		foreign[string(resp.Kvs[0].Key)] = string(resp.Kvs[0].Value)
	}
	// And damage of maclan's own shapes, which repair must still fix.
	put(t, s, map[string]string{root + "lease/4-0a000009": "not json", root + "attach/c9=eth0/4-0a000007": ""})

	locked(t, s, func() error {
		rep, err := s.Fsck(ctx, true)
		left := 0
		for _, p := range rep.Problems {
			if _, ok := foreign[p.Where]; ok {
				left++
				if p.Repaired || p.Kind != "foreign" {
					t.Errorf("fsck --repair on a foreign key: %v, want kind foreign, not repaired", p)
				}
			} else if !p.Repaired {
				t.Errorf("fsck --repair left %v", p)
			}
		}
		if left != len(foreign) {
			t.Errorf("fsck --repair reported %d foreign keys, want %d:\n%v", left, len(foreign), rep.Problems)
		}
		return err
	})
	wantKeys(t, s, foreign)
	locked(t, s, func() error {
		rep, err := s.Fsck(ctx, false)
		for _, p := range rep.Problems {
			if p.Kind != "foreign" {
				t.Errorf("fsck after repair: %v", p)
			}
		}
		if rep.Leases != 1 {
			t.Errorf("fsck after repair = %+v, want c1's lease", rep)
		}
		leases, lerr := s.List(ctx)
		if len(leases) != 1 || lerr != nil {
			t.Errorf("List with foreign keys = %v, %v; want c1's lease and no error", leases, lerr)
		}
		return errors.Join(err, lerr)
	})
	locked(t, nested, func() error {
		rep, err := nested.Fsck(ctx, false)
		// net1's own keys are under the nested store's prefix: foreign to it.
		for _, p := range rep.Problems {
			if p.Kind != "foreign" {
				t.Errorf("fsck of the nested store: %v", p)
			}
		}
		if rep.Leases != 1 {
			t.Errorf("fsck of the nested store = %+v, want its lease", rep)
		}
		return err
	})
}

// TestEndpointCredentials: an endpoint with user:password is refused, and
// no error shows the password.
func TestEndpointCredentials(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there
	for _, ep := range []string{"http://maclan:s3cret@" + addr, "http://s3cret@" + addr, "maclan:s3cret@" + addr} {
		_, err := New("net1", Options{Endpoints: []string{ep}, LockDir: t.TempDir(), DialTimeout: 200 * time.Millisecond})
		if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "credentials") {
			t.Errorf("New with endpoint %q = %v; want a refusal that does not show the password", ep, err)
		}
		_, err = Networks(ctx, Options{Endpoints: []string{ep}, DialTimeout: 200 * time.Millisecond})
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Networks with endpoint %q = %v; want a refusal that does not show the password", ep, err)
		}
	}
	if got := redactEndpoint("https://u:pw@h:2379/x"); got != "https://REDACTED@h:2379/x" {
		t.Errorf("redactEndpoint = %q", got)
	}
}
