package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/maclan-cni/maclan/pkg/cnierr"
	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/macvlan"
	"github.com/maclan-cni/maclan/pkg/netnstest"
)

// verbLab runs maclan's verbs in this process: a throwaway host namespace
// whose master "m0" is a veth end, and a throwaway container namespace.
type verbLab struct {
	t          *testing.T
	host, cont ns.NetNS
}

func newVerbLab(t *testing.T) *verbLab {
	netnstest.RequireRoot(t)
	l := &verbLab{t: t, host: netnstest.NewNS(t), cont: netnstest.NewNS(t)}
	netnstest.Veth(t, l.host, "m0")
	t.Setenv("CNI_PATH", t.TempDir()) // no IPAM plugin to run
	return l
}

// run calls verb from the host namespace, as the runtime would, and
// returns what it printed.
func (l *verbLab) run(verb func(*command) error, stdin string) (string, error) {
	var out bytes.Buffer
	c := &command{
		args: &skel.CmdArgs{ContainerID: "c1", Netns: l.cont.Path(), IfName: "eth0", StdinData: []byte(stdin)},
		log:  slog.New(slog.NewTextHandler(io.Discard, nil)), tr: newTracer(false, nil), stdout: &out,
	}
	err := l.host.Do(func(ns.NetNS) error { return verb(c) })
	return out.String(), err
}

func (l *verbLab) hasLink(name string) bool {
	_, err := netnstest.Handle(l.t, l.cont).LinkByName(name)
	return err == nil
}

const l2Conf = `{"cniVersion":"1.0.0","name":"lan","type":"maclan","master":"m0","mode":"private"}`

// TestVerbsL2: ADD makes the link, a repeated ADD answers with it, CHECK
// finds it as the result says, DEL removes it and a second DEL succeeds.
func TestVerbsL2(t *testing.T) {
	l := newVerbLab(t)
	out, err := l.run(cmdAdd, l2Conf)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	var res current.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Interfaces) != 1 || res.Interfaces[0].Name != "eth0" {
		t.Fatalf("ADD printed %q (%v), want one interface eth0", out, err)
	}
	again, err := l.run(cmdAdd, l2Conf)
	if err != nil || again != out {
		t.Errorf("repeated ADD: got %q, %v; want the first result %q", again, err, out)
	}
	var conf map[string]any
	_ = json.Unmarshal([]byte(l2Conf), &conf) // a constant that decodes
	conf["prevResult"] = res
	check, _ := json.Marshal(conf)
	if _, err := l.run(cmdCheck, string(check)); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	conf["mode"] = "vepa"
	check, _ = json.Marshal(conf)
	if _, err := l.run(cmdCheck, string(check)); err == nil || !strings.Contains(err.Error(), "in macvlan mode private, want vepa") {
		t.Errorf("CHECK in another mode: got %v, want a mode mismatch", err)
	}
	for i := range 2 {
		if _, err := l.run(cmdDel, l2Conf); err != nil {
			t.Errorf("DEL %d: %v", i+1, err)
		}
	}
	if l.hasLink("eth0") {
		t.Errorf("eth0 is left after DEL")
	}
}

// TestAddRollsBack: an ADD that fails leaves no link, whether it fails
// before the link is made or after.
func TestAddRollsBack(t *testing.T) {
	l := newVerbLab(t)
	for _, tc := range []struct {
		name, conf, want string
		code             uint
	}{
		{"IPAM missing, after the link (not state-only)",
			`{"cniVersion":"1.0.0","name":"lan","type":"maclan","master":"m0","ipam":{"type":"nope"}}`,
			`IPAM "nope" ADD: failed to find plugin "nope"`, 999},
		{"state-only IPAM missing, before the link",
			`{"cniVersion":"1.0.0","name":"lan","type":"maclan","master":"m0","ipam":{"type":"static"}}`,
			`IPAM "static" ADD: failed to find plugin "static"`, 999},
		{"MTU above the master's",
			`{"cniVersion":"1.0.0","name":"lan","type":"maclan","master":"m0","mtu":9000}`,
			`field "mtu": 9000 is above the MTU 1500 of master "m0": invalid configuration`, 7},
		{"master missing",
			`{"cniVersion":"1.0.0","name":"lan","type":"maclan","master":"m9"}`,
			`master "m9" in the host network namespace: master interface not found: invalid configuration`, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.run(cmdAdd, tc.conf)
			if err == nil || !strings.Contains(err.Error(), tc.want) || cnierr.Code(err) != tc.code {
				t.Errorf("got %v (code %d), want %q (code %d)", err, cnierr.Code(err), tc.want, tc.code)
			}
			for _, name := range []string{"eth0", macvlan.TempName("eth0")} {
				if l.hasLink(name) {
					t.Errorf("%s is left after the failed ADD", name)
				}
			}
		})
	}
}

// TestCheckNeedsPrevResult: CHECK without a prevResult is a configuration
// error.
func TestCheckNeedsPrevResult(t *testing.T) {
	l := newVerbLab(t)
	_, err := l.run(cmdCheck, l2Conf)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "CHECK needs a prevResult") {
		t.Errorf("got %v, want a configuration error", err)
	}
}
