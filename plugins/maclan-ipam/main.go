// Command maclan-ipam is the IPAM plugin of maclan: host-local's
// configuration, a crash-safe directory store whose cost does not grow with
// the number of leases, GC and STATUS. Run by hand (no CNI_COMMAND) it is a
// small operator tool for its store; see cli.go.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/maclan-cni/maclan/pkg/cnierr"
	"github.com/maclan-cni/maclan/pkg/config"
)

// buildVersion is set at link time: -ldflags "-X main.buildVersion=v1.2.3".
var buildVersion = "dev"

func about() string { return "CNI maclan-ipam plugin " + buildVersion }

func main() {
	if os.Getenv("CNI_COMMAND") == "" {
		os.Exit(runCLI(os.Args[1:], os.Stdout, os.Stderr))
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cnierr.Wrap(cmdAdd),
		Del:    cnierr.Wrap(cmdDel),
		Check:  cnierr.Wrap(cmdCheck),
		GC:     cnierr.Wrap(cmdGC),
		Status: cnierr.Wrap(cmdStatus),
	}, version.All, about())
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("plugin", "maclan-ipam")
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := config.ParseIPAMConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	log := logger()
	st, err := openStore(conf, log)
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	res, err := add(context.Background(), conf, st, args.ContainerID, args.IfName, log)
	if err != nil {
		return err
	}
	return types.PrintResult(res, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) (err error) {
	conf, err := config.DecodeIPAMConf(args.StdinData)
	if err != nil {
		return err
	}
	log := logger()
	st, err := openStore(conf, log)
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	return del(context.Background(), st, args.ContainerID, args.IfName, log)
}

func cmdCheck(args *skel.CmdArgs) (err error) {
	conf, err := config.ParseIPAMConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	log := logger()
	st, err := openStore(conf, log)
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	return check(context.Background(), conf, st, args.StdinData, args.ContainerID, args.IfName, log)
}

func cmdGC(args *skel.CmdArgs) (err error) {
	conf, err := config.DecodeIPAMConf(args.StdinData)
	if err != nil {
		return err
	}
	log := logger()
	st, err := openStore(conf, log)
	if err != nil {
		return err
	}
	defer closeStore(st, &err)
	return gc(context.Background(), conf, st, log)
}

func cmdStatus(args *skel.CmdArgs) (err error) {
	conf, err := config.ParseIPAMConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	log := logger()
	st, err := openStore(conf, log)
	if err != nil {
		return notAvailable(err)
	}
	defer closeStore(st, &err)
	return status(context.Background(), conf, st, log)
}
