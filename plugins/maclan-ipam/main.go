// Package ipamplugin is maclan-ipam, the IPAM plugin of maclan: host-local's
// configuration, a crash-safe directory store whose cost does not grow with
// the number of leases, GC and STATUS. Run by hand (no CNI_COMMAND) it is a
// small operator tool for its store; see cli.go.
//
// It has no executable of its own: maclan's executable runs Main when it is
// started under the name maclan-ipam (make install links the two names), and
// runs a delegated IPAM call in process (InProcess) when the maclan-ipam
// that CNI_PATH finds is that very file. maclan-ipam-etcd is the same
// package built with -tags etcd.
package ipamplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/maclan-cni/maclan/pkg/cmdwrap"
	"github.com/maclan-cni/maclan/pkg/cnierr"
	"github.com/maclan-cni/maclan/pkg/cniresult"
	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ipam/ipamconf"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/logging"
)

// buildVersion is set at link time:
// -ldflags "-X github.com/maclan-cni/maclan/plugins/maclan-ipam.buildVersion=v1.2.3".
var buildVersion = "dev"

func about() string { return "CNI maclan-ipam plugin " + buildVersion }

// Main is maclan-ipam's main.
func Main() {
	if os.Getenv("CNI_COMMAND") == "" {
		if !etcdBuiltIn && cliWantsEtcd(os.Args[1:]) {
			fmt.Fprintln(os.Stderr, execEtcd(os.Args[1:]))
			os.Exit(1)
		}
		os.Exit(runCLI(os.Args[1:], os.Stdout, os.Stderr))
	}
	if !etcdBuiltIn {
		if err := handOffPlugin(); err != nil {
			// skel prints the error as CNI JSON, with the right exit code.
			skel.PluginMainFuncs(skel.CNIFuncs{
				Add: failWith(err), Del: failWith(err), Check: failWith(err), GC: failWith(err), Status: failWith(err),
			}, version.All, about())
			return
		}
	}
	skel.PluginMainFuncs(verbs(os.Stdout), version.All, about())
}

// verbs are the plugin's commands; ADD prints its result to stdout.
func verbs(stdout io.Writer) skel.CNIFuncs {
	w := cmdwrap.Options{Plugin: "maclan-ipam", LogConf: readLogConf, Validate: validAttachment}
	return skel.CNIFuncs{
		Add:    w.Wrap("ADD", func(args *skel.CmdArgs, log *slog.Logger) error { return cmdAdd(args, log, stdout) }),
		Del:    w.Wrap("DEL", cmdDel),
		Check:  w.Wrap("CHECK", cmdCheck),
		GC:     w.Wrap("GC", cmdGC),
		Status: w.Wrap("STATUS", cmdStatus),
	}
}

func failWith(err error) func(*skel.CmdArgs) error {
	return func(*skel.CmdArgs) error { return cnierr.New(err) }
}

// logConf is the part of the net conf that says where to log (the same
// top-level "logFile" and "logLevel" as maclan's).
type logConf struct {
	Name     string `json:"name"`
	LogFile  string `json:"logFile"`
	LogLevel string `json:"logLevel"`
}

// readLogConf reads where to log from the net conf; what does not decode
// is left out (the command reports a bad configuration itself).
func readLogConf(stdin []byte) (logging.Options, string) {
	var lc logConf
	_ = json.Unmarshal(stdin, &lc) // a bad config is reported by the command itself
	return logging.Options{File: lc.LogFile, Level: lc.LogLevel}, lc.Name
}

// validAttachment checks the attachment identity of the verbs that carry
// one, before anything is written under it.
func validAttachment(verb string, args *skel.CmdArgs) error {
	if verb == "GC" || verb == "STATUS" {
		return nil
	}
	if err := store.ValidateAttachment(args.ContainerID, args.IfName); err != nil {
		return fmt.Errorf("CNI_CONTAINERID/CNI_IFNAME: %w: %w", err, config.ErrInvalidEnv)
	}
	return nil
}

// withStore opens the store of conf, sweeps the leases of earlier boots
// (once per boot), runs fn on it and closes it, joining a close error into
// fn's.
func withStore(conf *ipamconf.Conf, lc lifecycle, log *slog.Logger, fn func(pluginStore) error) (err error) {
	st, err := openStore(conf, lc, log)
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	lc.sweepAfterBoot(context.Background(), conf, st, log)
	return fn(st)
}

func cmdAdd(args *skel.CmdArgs, log *slog.Logger, stdout io.Writer) (err error) {
	conf, err := ipamconf.Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	netns := args.Netns
	if conf.HostAttachment {
		netns = ""
	}
	lc := newLifecycle(netns)
	st, err := openStore(conf, lc, log)
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	// The sweep, if due, runs under the allocation's lock (sweepPrelude);
	// on etcd in a lock section of its own, as withStore runs it.
	if conf.Store.Type == "etcd" {
		lc.sweepAfterBoot(context.Background(), conf, st, log)
	} else {
		lc.prelude = lc.sweepPrelude(conf, st, log)
	}
	res, err := add(context.Background(), conf, st, lc, args.ContainerID, args.IfName, log)
	if err != nil {
		return err
	}
	// What types.PrintResult does, to stdout.
	out, err := res.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return err
	}
	return cniresult.Print(stdout, out) // PrintTo's bytes, without its reflection
}

func cmdDel(args *skel.CmdArgs, log *slog.Logger) error {
	conf, err := ipamconf.Decode(args.StdinData)
	if err != nil {
		return err
	}
	lc := newLifecycle(args.Netns)
	return withStore(conf, lc, log, func(st pluginStore) error {
		return del(context.Background(), conf, st, lc, args.ContainerID, args.IfName, log)
	})
}

func cmdCheck(args *skel.CmdArgs, log *slog.Logger) error {
	conf, err := ipamconf.Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	return withStore(conf, newLifecycle(args.Netns), log, func(st pluginStore) error {
		return check(context.Background(), conf, st, args.StdinData, args.ContainerID, args.IfName, log)
	})
}

func cmdGC(args *skel.CmdArgs, log *slog.Logger) error {
	conf, err := ipamconf.Decode(args.StdinData)
	if err != nil {
		return err
	}
	lc := newLifecycle(args.Netns)
	return withStore(conf, lc, log, func(st pluginStore) error {
		return gc(context.Background(), conf, st, lc, log)
	})
}

func cmdStatus(args *skel.CmdArgs, log *slog.Logger) (err error) {
	conf, err := ipamconf.Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	lc := newLifecycle(args.Netns)
	st, err := openStore(conf, lc, log)
	if err != nil {
		return notAvailable(err) // STATUS: a store that cannot be opened is 50
	}
	defer closeStore(st, &err)
	lc.sweepAfterBoot(context.Background(), conf, st, log)
	return status(context.Background(), conf, st, log)
}
