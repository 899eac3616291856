// Package cmdwrap gives every CNI command of maclan's two plugins the same
// frame: a logger set up as the configuration's "logFile" and "logLevel"
// ask, every error turned into a CNI error with its code (package cnierr),
// and one log line per call with the outcome and the duration. Each plugin
// adds what it alone needs through Options.
package cmdwrap

import (
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/maclan-cni/maclan/pkg/cnierr"
	"github.com/maclan-cni/maclan/pkg/logging"
)

// Func is a plugin command, given the call's logger.
type Func func(args *skel.CmdArgs, log *slog.Logger) error

// Options say what a plugin adds to the frame.
type Options struct {
	// Plugin names the plugin on every log line.
	Plugin string
	// LogConf reads where to log and the network's name from the call's
	// configuration. A configuration it cannot read gives what it could
	// (the command itself reports the configuration's faults).
	LogConf func(stdin []byte) (opts logging.Options, network string)
	// Begin, if set, runs first, before the logger exists.
	Begin func()
	// Started, if set, runs once the logger exists and the call's clock
	// has started.
	Started func(log *slog.Logger)
	// Validate, if set, checks the call's arguments before the command
	// runs; its error is the call's.
	Validate func(verb string, args *skel.CmdArgs) error
	// NetnsOnFailure adds CNI_NETNS to the line of a failed call.
	NetnsOnFailure bool
	// Attrs, if set, returns attributes that end both lines (maclan's
	// phase timings).
	Attrs func() []any
}

// Wrap adapts fn to skel under verb (ADD, DEL, ...).
func (o Options) Wrap(verb string, fn Func) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		if o.Begin != nil {
			o.Begin()
		}
		logOpts, network := o.LogConf(args.StdinData)
		log, closeLog := logging.New(logOpts, "plugin", o.Plugin, "cmd", verb,
			"container", args.ContainerID, "network", network, "ifname", args.IfName)
		defer closeLog()
		start := time.Now()
		if o.Started != nil {
			o.Started(log)
		}
		if err := o.call(verb, fn, args, log); err != nil {
			e := cnierr.New(err)
			attrs := []any{"code", e.Code, "error", e.Msg}
			if o.NetnsOnFailure {
				attrs = append(attrs, "netns", args.Netns)
			}
			log.Error("failed", append(append(attrs, "duration", time.Since(start)), o.attrs()...)...)
			return e
		}
		log.Info("ok", append([]any{"duration", time.Since(start)}, o.attrs()...)...)
		return nil
	}
}

func (o Options) call(verb string, fn Func, args *skel.CmdArgs, log *slog.Logger) error {
	if o.Validate != nil {
		if err := o.Validate(verb, args); err != nil {
			return err
		}
	}
	return fn(args, log)
}

func (o Options) attrs() []any {
	if o.Attrs == nil {
		return nil
	}
	return o.Attrs()
}
