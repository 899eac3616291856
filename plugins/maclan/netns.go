package main

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/macvlan"
)

// handles opens netlink handles on the container namespace and on the
// namespace where the master lives (the plugin's own, or the container's
// with linkInContainer).
//
// Only rtnetlink sockets: everything maclan asks is link, address, route or
// neighbour (without the family, a handle opens xfrm and netfilter sockets
// too, each entering the namespace again).
type handles struct {
	cont, master netlinksafe.Handle
	where        string
}

func openHandles(contNS ns.NetNS, linkInContainer bool) (*handles, error) {
	cont, err := netlinksafe.NewHandleAt(netns.NsHandle(contNS.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in container netns %q: %w", contNS.Path(), err)
	}
	if linkInContainer {
		return &handles{cont: cont, master: cont, where: "container"}, nil
	}
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		cont.Close()
		return nil, fmt.Errorf("netlink handle in host netns: %w", err)
	}
	return &handles{cont: cont, master: host, where: "host"}, nil
}

func (h *handles) Close() {
	if h.master.Handle != h.cont.Handle {
		h.master.Close()
	}
	h.cont.Close()
}

// openContainer opens the container's namespace and the netlink handles
// (see openHandles); the caller closes both.
func openContainer(path string, linkInContainer bool) (ns.NetNS, *handles, error) {
	contNS, err := openNetNS(path)
	if err != nil {
		return nil, nil, err
	}
	h, err := openHandles(contNS, linkInContainer)
	if err != nil {
		contNS.Close()
		return nil, nil, err
	}
	return contNS, h, nil
}

// inNetNS runs fn with the calling thread in the network namespace target,
// for what only a thread's namespace reaches (sysctls under /proc/sys/net,
// the IPv6 DAD subscription, raw sockets), and brings the thread back.
//
// Unlike ns.Do it does not start a thread for fn: main's init locked the
// main goroutine to its thread for the whole process, so no other goroutine
// runs on that thread while it is away, and a new thread (made through the
// runtime's template thread once a goroutine is locked, then torn down)
// cost more than the rest of an IPv4 ADD's configuration. The lock taken
// here only makes that certain for any caller; it is kept if the way back
// fails, so that the thread is never handed to another goroutine while in
// target (errStranded). The handles keep working either way: their sockets
// are bound to their namespaces.
func inNetNS(target ns.NetNS, fn func() error) error {
	runtime.LockOSThread()
	back, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open this thread's netns: %w", err)
	}
	defer unix.Close(back) //nolint:errcheck // read-only namespace file
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %q: %w", target.Path(), err)
	}
	ferr := fn()
	if err := unix.Setns(back, unix.CLONE_NEWNET); err != nil {
		return errors.Join(ferr, fmt.Errorf("return from netns %q to the runtime's: %w: %w", target.Path(), errStranded, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// errStranded: the calling thread could not come back from a container's
// namespace (inNetNS). Whatever must run in the runtime's namespace runs on
// another thread from then on (add's roll-back).
var errStranded = errors.New("thread left in the container's namespace")

func openNetNS(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("open container netns %q: %w", path, err)
	}
	return n, nil
}

// deleteLink removes the container's link, and one an interrupted ADD left
// under its temporary name. A namespace that has gone took the link with
// it; a link that is not ours is left in place, with a warning.
func deleteLink(netnsPath, ifName string, log *slog.Logger) error {
	if netnsPath == "" {
		return nil // the runtime has no namespace left (after a reboot, say)
	}
	contNS, err := ns.GetNS(netnsPath)
	if err != nil {
		var gone ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &gone) || errors.As(err, &notNS) {
			return nil // the namespace, and the link with it, is gone
		}
		return fmt.Errorf("open container netns %q: %w", netnsPath, err)
	}
	defer contNS.Close()
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(contNS.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle in container netns %q: %w", netnsPath, err)
	}
	defer h.Close()
	// An ADD killed between creating the link and renaming it leaves it
	// under its temporary name.
	if _, err := macvlan.Delete(h, macvlan.TempName(ifName)); err != nil {
		log.Warn("interface left in place", "netns", netnsPath, "error", err)
	}
	if _, err := macvlan.Delete(h, ifName); err != nil {
		// Not ours (another plugin's link of that name): leave it, and do
		// not fail DEL for ever over it.
		log.Warn("interface left in place", "netns", netnsPath, "error", err)
	}
	return nil
}
