package cmdwrap

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/logging"
)

// TestLines: the one line per call, its fields and their order, for the
// shapes of both plugins (integration/logging_test.go reads them).
func TestLines(t *testing.T) {
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/c1", StdinData: []byte("{}")}
	bad := fmt.Errorf("field \"mode\": %w", config.ErrInvalid)
	for _, tc := range []struct {
		name     string
		opts     func(*Options)
		fn       Func
		wantCode uint
		want     string
	}{
		{"maclan ok", maclanLike, ok, 0,
			`level=INFO msg=ok plugin=maclan cmd=ADD container=c1 network=lan ifname=eth0 duration=D phase.config=D` + "\n"},
		{"maclan failed: netns before the duration", maclanLike, fails(bad), types.ErrInvalidNetworkConfig,
			`level=ERROR msg=failed plugin=maclan cmd=ADD container=c1 network=lan ifname=eth0 code=7 error="field \"mode\": invalid configuration" netns=/run/netns/c1 duration=D phase.config=D` + "\n"},
		{"ipam ok", ipamLike(nil), ok, 0,
			`level=INFO msg=ok plugin=maclan-ipam cmd=ADD container=c1 network=lan ifname=eth0 duration=D` + "\n"},
		{"ipam failed", ipamLike(nil), fails(bad), types.ErrInvalidNetworkConfig,
			`level=ERROR msg=failed plugin=maclan-ipam cmd=ADD container=c1 network=lan ifname=eth0 code=7 error="field \"mode\": invalid configuration" duration=D` + "\n"},
		{"ipam refuses the attachment before the command", ipamLike(errors.New("bad id")), mustNotRun(t), types.ErrInternal,
			`level=ERROR msg=failed plugin=maclan-ipam cmd=ADD container=c1 network=lan ifname=eth0 code=999 error="bad id" duration=D` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			o := Options{LogConf: func([]byte) (logging.Options, string) {
				return logging.Options{Stderr: &buf, Level: "info"}, "lan"
			}}
			tc.opts(&o)
			err := o.Wrap("ADD", tc.fn)(args)
			var te *types.Error
			if tc.wantCode == 0 && err != nil || tc.wantCode != 0 && (!errors.As(err, &te) || te.Code != tc.wantCode) {
				t.Errorf("got error %v, want code %d", err, tc.wantCode)
			}
			got := regexp.MustCompile(`time=\S+ `).ReplaceAllString(buf.String(), "")
			got = regexp.MustCompile(`=[0-9.]+[µnm]?s\b`).ReplaceAllString(got, "=D")
			if got != tc.want {
				t.Errorf("got line\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func maclanLike(o *Options) {
	o.Plugin, o.NetnsOnFailure = "maclan", true
	o.Attrs = func() []any { return []any{slog.Group("phase", slog.Duration("config", 5))} }
}

func ipamLike(validErr error) func(*Options) {
	return func(o *Options) {
		o.Plugin = "maclan-ipam"
		o.Validate = func(string, *skel.CmdArgs) error { return validErr }
	}
}

func ok(*skel.CmdArgs, *slog.Logger) error { return nil }

func fails(err error) Func { return func(*skel.CmdArgs, *slog.Logger) error { return err } }

func mustNotRun(t *testing.T) Func {
	return func(*skel.CmdArgs, *slog.Logger) error {
		t.Error("the command ran after its arguments were refused")
		return nil
	}
}
