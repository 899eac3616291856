// Command maclan is a CNI plugin that puts a container straight onto the LAN
// of a host interface (the master) through a macvlan link, and delegates its
// addresses to any IPAM plugin.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/maclan-cni/maclan/pkg/cmdwrap"
	"github.com/maclan-cni/maclan/pkg/cnierr"
	"github.com/maclan-cni/maclan/pkg/cniresult"
	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ifconfig"
	"github.com/maclan-cni/maclan/pkg/logging"
	"github.com/maclan-cni/maclan/pkg/macvlan"
	"github.com/maclan-cni/maclan/pkg/masterlink"
	ipamplugin "github.com/maclan-cni/maclan/plugins/maclan-ipam"
)

// buildVersion is set at link time (-X main.buildVersion=...).
var buildVersion = "dev"

const (
	// ipamTimeout bounds one delegated IPAM call. IPAMs have time-outs of
	// their own (maclan-ipam's store lock answers code 11 long before this);
	// this only keeps a wedged foreign IPAM from hanging the runtime.
	ipamTimeout = 2 * time.Minute
	// dadTimeout bounds the wait for IPv6 duplicate address detection.
	dadTimeout = 10 * time.Second
	// dadRetrans is how long DAD waits for an answer to its solicitation
	// (the kernel's default is 1s, after a random delay of up to 1s).
	dadRetrans = 20 * time.Millisecond
	// announcements per address after ADD.
	announcements = 3
	// shimLockTimeout bounds the wait for the host shim's lock.
	shimLockTimeout = 10 * time.Second
)

func init() {
	// Namespace switches (ns.Do) act on one OS thread; keep main on it.
	runtime.LockOSThread()
}

func main() {
	if filepath.Base(os.Args[0]) == selfIPAM {
		ipamplugin.Main() // the same executable, run as maclan-ipam
		return
	}
	if runByHand() {
		os.Exit(cliMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	tr := newTracer(os.Getenv("MACLAN_TRACE") == "1", os.Stderr)
	w := wrapper(tr)
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    w.Wrap("ADD", traced(cmdAdd, tr)),
		Del:    w.Wrap("DEL", traced(cmdDel, tr)),
		Check:  w.Wrap("CHECK", traced(cmdCheck, tr)),
		GC:     w.Wrap("GC", traced(cmdGC, tr)),
		Status: w.Wrap("STATUS", traced(cmdStatus, tr)),
	}, version.All, "CNI maclan plugin "+buildVersion)
}

// wrapper is maclan's frame around each command (package cmdwrap): the
// logger that "logFile" and "logLevel" ask for, CNI_NETNS on the line of a
// failed call, and with logLevel debug the time of each phase. tr times the
// steps (MACLAN_TRACE=1 prints them).
func wrapper(tr *tracer) cmdwrap.Options {
	return cmdwrap.Options{
		Plugin:  "maclan",
		LogConf: readLogConf,
		Begin:   func() { tr.step("skel") },
		Started: func(log *slog.Logger) {
			tr.step("logger")
			if log.Enabled(context.Background(), slog.LevelDebug) {
				tr.collectPhases() // logLevel debug: the call's line carries the phases
			}
		},
		NetnsOnFailure: true,
		Attrs:          func() []any { return []any{tr.phaseAttr()} },
	}
}

// readLogConf reads where to log from the configuration; one that does not
// decode is reported by the command itself.
func readLogConf(stdin []byte) (logging.Options, string) {
	conf, err := config.DecodeNetConf(stdin)
	if err != nil {
		return logging.Options{}, ""
	}
	return logging.Options{File: conf.LogFile, Level: conf.LogLevel}, conf.Name
}

// traced runs fn as a command of this process, with the tracer.
func traced(fn func(*command) error, tr *tracer) cmdwrap.Func {
	return func(args *skel.CmdArgs, log *slog.Logger) error {
		return fn(&command{args: args, log: log, tr: tr, stdout: os.Stdout})
	}
}

// command is one call of the plugin: its arguments, its logger, its
// tracer, and where its result goes (stdout; a buffer in tests).
type command struct {
	args   *skel.CmdArgs
	log    *slog.Logger
	tr     *tracer
	stdout io.Writer
}

// print writes result in the configuration's CNI version, as
// types.PrintResult does to os.Stdout.
func (c *command) print(result types.Result, cniVersion string) error {
	r, err := result.GetAsVersion(cniVersion)
	if err != nil {
		return err
	}
	return cniresult.Print(c.stdout, r) // PrintTo's bytes, without its reflection
}

func cmdAdd(c *command) error {
	conf, err := config.ParseNetConf(c.args.StdinData, c.args.Args)
	if err != nil {
		return err
	}
	var mac net.HardwareAddr
	if conf.MAC != "" {
		if mac, err = config.ParseMAC(conf.MAC); err != nil {
			return fmt.Errorf("mac: %w: %w", err, config.ErrInvalid)
		}
	}
	c.tr.step("parse")
	return add(c, conf, mac)
}

// cmdDel removes the link and releases the addresses. It succeeds when there
// is nothing left to do: no prior ADD, a second DEL, a netns or master that
// has gone. It still releases the lease in all those cases.
func cmdDel(c *command) error {
	conf, err := config.DecodeNetConf(c.args.StdinData)
	if err != nil {
		return err
	}
	c.tr.step("parse")
	ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
	defer cancel()
	// A state-only IPAM releases while the kernel tears the link down (20 ms
	// and more of RCU waits): neither depends on the other. It is forked now,
	// from the runtime's namespace, before this thread enters any other. Any
	// other IPAM may need the interface to release (dhcp sends its
	// DHCPRELEASE from it), so it finishes first, as with the reference.
	rel, err := startRelease(ctx, conf.IPAM.Type, c.args.StdinData, c.tr)
	errs := []error{err}
	if !stateOnlyIPAM(conf.IPAM.Type) {
		errs = append(errs, rel.wait(c.tr))
	}
	errs = append(errs, deleteLink(c.args.Netns, c.args.IfName, c.log))
	c.tr.step("link delete")
	if conf.ShimEnabled() {
		errs = append(errs, detachShim(conf, attachmentID(c.args)))
	}
	errs = append(errs, rel.wait(c.tr))
	return errors.Join(errs...)
}

// cmdCheck checks that the container still has what ADD gave it: the IPAM's
// lease, a macvlan of the master in the configured mode with the result's
// MAC, the host shim's routes, and the result's addresses and routes.
func cmdCheck(c *command) error {
	conf, prev, err := parseCheck(c.args)
	if err != nil {
		return err
	}
	intf, err := prevInterface(prev, c.args)
	if err != nil {
		return err
	}
	if err := ipamCall("CHECK", conf.IPAM.Type, c.args.StdinData); err != nil {
		return err
	}
	contNS, h, err := openContainer(c.args.Netns, conf.LinkInContainer)
	if err != nil {
		return err
	}
	defer contNS.Close()
	defer h.Close()
	master, err := masterlink.Lookup(h.master, conf.Master, h.where)
	if err != nil {
		return err
	}
	if err := verifyLink(h, c.args.IfName, master, conf, intf); err != nil {
		return err
	}
	if conf.ShimEnabled() && !conf.LinkInContainer {
		if err := verifyShim(h, conf, master, prev); err != nil {
			return err
		}
	}
	return ifconfig.Verify(h.cont, c.args.IfName, prev.IPs, prev.Routes)
}

// parseCheck parses CHECK's configuration and its prevResult.
func parseCheck(args *skel.CmdArgs) (*config.NetConf, *current.Result, error) {
	conf, err := config.ParseNetConf(args.StdinData, args.Args)
	if err != nil {
		return nil, nil, err
	}
	if conf.RawPrevResult == nil {
		return nil, nil, fmt.Errorf("CHECK needs a prevResult: %w", config.ErrInvalid)
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, nil, fmt.Errorf("parse prevResult: %w: %w", err, config.ErrInvalid)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, nil, fmt.Errorf("convert prevResult: %w: %w", err, config.ErrInvalid)
	}
	return conf, prev, nil
}

// prevInterface is the prevResult's interface of this attachment (the
// last one, if it names it twice).
func prevInterface(prev *current.Result, args *skel.CmdArgs) (*current.Interface, error) {
	var intf *current.Interface
	for _, i := range prev.Interfaces {
		if i.Name == args.IfName && i.Sandbox == args.Netns {
			intf = i
		}
	}
	if intf == nil {
		return nil, fmt.Errorf("prevResult has no interface %q in sandbox %q", args.IfName, args.Netns)
	}
	return intf, nil
}

// verifyLink checks the container's link against the configuration and
// the prevResult's MAC.
func verifyLink(h *handles, ifName string, master netlink.Link, conf *config.NetConf, intf *current.Interface) error {
	want := macvlan.Expect{Master: master.Attrs().Name, MasterIndex: master.Attrs().Index, Mode: linkMode(conf.Mode), MTU: conf.MTU}
	if intf.Mac != "" {
		var err error
		if want.MAC, err = net.ParseMAC(intf.Mac); err != nil {
			return fmt.Errorf("prevResult interface %q: MAC %q: %w", intf.Name, intf.Mac, err)
		}
	}
	return macvlan.Verify(h.cont, h.master, ifName, want)
}

func verifyShim(h *handles, conf *config.NetConf, master netlink.Link, prev *current.Result) error {
	sh, err := newShim(h.master, conf, master.Attrs().Name, nil)
	if err != nil {
		return err
	}
	return sh.Verify(resultIPs(prev))
}

func attachmentID(args *skel.CmdArgs) string {
	// ':' can appear in neither a container ID nor an interface name.
	return args.ContainerID + ":" + args.IfName
}

func resultIPs(r *current.Result) []netip.Addr {
	var ips []netip.Addr
	for _, ipc := range r.IPs {
		if ip, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips
}

// cmdStatus reports whether an ADD could succeed now: the master exists and
// is up, and the IPAM is ready (SPEC.md, "STATUS").
func cmdStatus(c *command) error {
	conf, err := config.DecodeNetConf(c.args.StdinData)
	if err != nil {
		return err
	}
	// With linkInContainer the master lives in a namespace STATUS is not
	// given; only the IPAM can be asked.
	if !conf.LinkInContainer {
		if err := masterReady(conf.Master); err != nil {
			return fmt.Errorf("%w: %w", cnierr.ErrNotAvailable, err)
		}
	}
	return ipamCall("STATUS", conf.IPAM.Type, c.args.StdinData)
}

func masterReady(name string) error {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	master, err := masterlink.Lookup(h, name, "host")
	if err != nil {
		return err
	}
	return masterlink.Ready(master)
}

// cmdGC forwards garbage collection to the IPAM (SPEC.md, "GC"): the links
// themselves die with their container namespaces.
func cmdGC(c *command) error {
	conf, err := config.DecodeNetConf(c.args.StdinData)
	if err != nil {
		return err
	}
	if conf.IPAM.Type == "" {
		return nil
	}
	stdin, err := withShimAttachments(c.args.StdinData, conf)
	if err != nil {
		return err
	}
	return ipamCall("GC", conf.IPAM.Type, stdin)
}
