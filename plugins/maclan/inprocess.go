package main

import (
	"os"
	"strings"

	cnins "github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	ipamplugin "github.com/maclan-cni/maclan/plugins/maclan-ipam"
)

// maclan and maclan-ipam are one executable under two names (make install
// links them). When maclan delegates to maclan-ipam and the maclan-ipam
// that CNI_PATH finds is the very file maclan runs from, the IPAM runs in
// this process: the same code on the same configuration bytes and the same
// environment, taking the same store lock, with the same result, error and
// log line as the exec would give, without a second process start-up (two
// thirds of an ADD's CPU time, docs/benchmarks.md). Any other maclan-ipam
// (an older one earlier in CNI_PATH, a wrapper script) and every etcd
// network (maclan-ipam hands those to maclan-ipam-etcd) are exec'd as
// before.

const selfIPAM = "maclan-ipam"

// runsInProcess reports whether the call to plugin, found at path, can run
// in this process.
func runsInProcess(plugin, path string, stdin []byte) bool {
	if plugin != selfIPAM || os.Getenv("MACLAN_IPAM_EXEC") == "1" {
		return false
	}
	self, err := os.Stat("/proc/self/exe")
	if err != nil {
		return false
	}
	found, err := os.Stat(path)
	if err != nil || !os.SameFile(self, found) {
		return false
	}
	return ipamplugin.InProcessable(stdin)
}

// startInProcess runs maclan-ipam's command with the CmdArgs that skel
// would parse in the exec'd plugin: this process's environment and stdin,
// which maclan's own skel has already checked.
//
// A DEL runs in a goroutine, as an exec'd IPAM runs beside maclan: its
// caller meanwhile deletes the link, which waits in the kernel for 20 ms
// and more, time the IPAM can use. Every other verb runs to its end here,
// on the calling thread, before startInProcess returns. ADD's own work
// while the IPAM runs (the master looked up, the link made) is a few
// hundred microseconds of CPU, and a second thread costs about as much: as
// the calling thread is locked (main's init), the runtime starts the new
// thread through its template thread, and each wake-up crosses threads
// (the sequential ADD of make bench: 0.48x the reference's time this way,
// 0.51x with a goroutine; 100 ADDs at once no slower). The calling thread
// is in the runtime's namespace, as startDelegate asks of its callers, so
// the IPAM sees the namespace that an exec'd one would (checkPluginNetNS,
// the conflict probe).
func startInProcess(command string, stdin []byte) *delegation {
	args := &skel.CmdArgs{
		ContainerID:   os.Getenv("CNI_CONTAINERID"),
		Netns:         os.Getenv("CNI_NETNS"),
		IfName:        os.Getenv("CNI_IFNAME"),
		Args:          os.Getenv("CNI_ARGS"),
		Path:          os.Getenv("CNI_PATH"),
		NetnsOverride: os.Getenv("CNI_NETNS_OVERRIDE"),
		StdinData:     stdin,
	}
	d := &delegation{stdin: stdin, done: make(chan struct{})}
	run := func() {
		defer close(d.done)
		if d.err = ipamplugin.InProcess(command, args, &d.stdout); d.err != nil {
			return
		}
		d.err = checkPluginNetNS(command, args)
	}
	if command == "DEL" {
		go run()
	} else {
		run()
	}
	return d
}

// inProcess reports whether the call runs in this process.
func (d *delegation) inProcess() bool { return d.done != nil }

// checkPluginNetNS is skel's check after an ADD or DEL (pluginMain): the
// namespace a call names must not be the plugin's own.
func checkPluginNetNS(command string, args *skel.CmdArgs) error {
	if command != "ADD" && command != "DEL" {
		return nil
	}
	if o := args.NetnsOverride; strings.ToUpper(o) == "TRUE" || o == "1" {
		return nil
	}
	own, cerr := cnins.CheckNetNS(args.Netns)
	if cerr != nil {
		return cerr
	}
	if own {
		return types.NewError(types.ErrInvalidNetNS, "plugin's netns and netns from CNI_NETNS should not be the same", "")
	}
	return nil
}
