// Package nldump holds the retrying netlink dumps that netlinksafe offers
// only on the package handle (the calling thread's namespace) and not on a
// netlinksafe.Handle bound to another namespace: there, AddrList falls
// through to the embedded netlink.Handle and returns ErrDumpInterrupted
// whenever the address table changes during the dump (NLM_F_DUMP_INTR).
// It imports nothing of maclan's.
package nldump

import (
	"errors"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// attempts matches netlinksafe's own limit.
const attempts = 5

// AddrLister is what AddrList needs of a handle: a netlinksafe.Handle (or
// a *netlink.Handle) has it.
type AddrLister interface {
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
}

var _ AddrLister = netlinksafe.Handle{}

// AddrList lists the addresses of link in the namespace of h, retrying an
// interrupted dump as netlinksafe.AddrList does. After the last attempt it
// returns what the kernel gave, possibly inconsistent, without the error,
// as netlinksafe does: a caller cannot do better than retry.
func AddrList(h AddrLister, link netlink.Link, family int) ([]netlink.Addr, error) {
	var addrs []netlink.Addr
	var err error
	for range attempts {
		addrs, err = h.AddrList(link, family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return addrs, err
		}
	}
	return addrs, nil
}
