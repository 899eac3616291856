// Package netnstest gives tests throwaway network namespaces and a master
// inside them, so that link tests never touch the machine's own
// interfaces. Only tests import it. Its helpers need root (CAP_NET_ADMIN,
// CAP_SYS_ADMIN to mount namespaces); RequireRoot skips a test without it.
package netnstest

import (
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and links")
	}
}

// NewNS returns a new network namespace, removed when t ends.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()              // the test is over: nothing to do on failure
		_ = testutils.UnmountNS(n) // as above
	})
	return n
}

// Handle returns a netlink handle bound to n, closed when t ends.
func Handle(t testing.TB, n ns.NetNS) netlinksafe.Handle {
	t.Helper()
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", n.Path(), err)
	}
	t.Cleanup(h.Close)
	return h
}

// Veth makes a veth pair name / name+"p" in n, both up, and returns name's
// link: a master for macvlan links that lives only in n.
func Veth(t testing.TB, n ns.NetNS, name string) netlink.Link {
	t.Helper()
	h := Handle(t, n)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: name + "p"}); err != nil {
		t.Fatalf("veth %s in %s: %v", name, n.Path(), err)
	}
	for _, l := range []string{name + "p", name} {
		link, err := h.LinkByName(l)
		if err == nil {
			err = h.LinkSetUp(link)
		}
		if err != nil {
			t.Fatalf("set %s up: %v", l, err)
		}
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	return link
}
