package nldump

import (
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// interrupted answers its first n dumps with ErrDumpInterrupted, as the
// kernel does when the table changes during a dump.
type interrupted struct {
	n, calls int
	err      error // returned once the interruptions are over
}

func (f *interrupted) AddrList(netlink.Link, int) ([]netlink.Addr, error) {
	f.calls++
	addrs := []netlink.Addr{{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, byte(f.calls)), Mask: net.CIDRMask(24, 32)}}}
	if f.calls <= f.n {
		return addrs, netlink.ErrDumpInterrupted
	}
	return addrs, f.err
}

func TestAddrListRetries(t *testing.T) {
	other := errors.New("permission denied")
	for _, tc := range []struct {
		name      string
		fake      interrupted
		wantCalls int
		wantErr   error
	}{
		{"no interruption", interrupted{}, 1, nil},
		{"two interruptions", interrupted{n: 2}, 3, nil},
		{"interrupted every time: the last dump, no error", interrupted{n: 99}, attempts, nil},
		{"another error is returned at once", interrupted{err: other}, 1, other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.fake
			addrs, err := AddrList(&f, nil, netlink.FAMILY_ALL)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("got error %v, want %v", err, tc.wantErr)
			}
			if f.calls != tc.wantCalls || len(addrs) != 1 || addrs[0].IP[15] != byte(f.calls) {
				t.Errorf("got %d calls and %v, want %d calls and the last dump's addresses", f.calls, addrs, tc.wantCalls)
			}
		})
	}
}
