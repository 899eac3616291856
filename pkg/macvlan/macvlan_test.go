package macvlan

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/maclan-cni/maclan/pkg/netnstest"
)

func TestCreateVerifyDeleteEachMode(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, mode := range []Mode{Bridge, Private, VEPA, Passthru} {
		t.Run(mode.String(), func(t *testing.T) {
			host, cont := netnstest.NewNS(t), netnstest.NewNS(t)
			master := netnstest.Veth(t, host, "m0")
			hostH, contH := netnstest.Handle(t, host), netnstest.Handle(t, cont)
			mac := net.HardwareAddr{0x02, 0x6d, 0, 0, 0, 9}
			if mode == Passthru {
				mac = nil // a passthru link takes the master's MAC
			}
			link, err := Create(hostH, contH, netns.NsHandle(cont.Fd()), false,
				Spec{Master: master, Mode: mode, MTU: 1400, MAC: mac, IfName: "eth0"})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			mv, ok := link.(*netlink.Macvlan)
			if !ok || mv.Attrs().Name != "eth0" || mv.Mode != mode.kernel() || mv.Attrs().MTU != 1400 {
				t.Errorf("got %s link %q in mode %d MTU %d, want macvlan \"eth0\" in %s MTU 1400",
					link.Type(), link.Attrs().Name, mv.Mode, link.Attrs().MTU, mode)
			}
			want := Expect{Master: "m0", MasterIndex: master.Attrs().Index, Mode: mode, MAC: mac, MTU: 1400}
			if err := Verify(contH, hostH, "eth0", want); err != nil {
				t.Errorf("Verify: %v", err)
			}
			other := Bridge
			if mode == Bridge {
				other = Private
			}
			want.Mode = other
			if err := Verify(contH, hostH, "eth0", want); err == nil || !strings.Contains(err.Error(), "in macvlan mode "+mode.String()+", want "+other.String()) {
				t.Errorf("Verify against mode %s: got %v, want a mode mismatch", other, err)
			}
			if deleted, err := Delete(contH, "eth0"); !deleted || err != nil {
				t.Errorf("Delete: got %v, %v; want true, nil", deleted, err)
			}
			if deleted, err := Delete(contH, "eth0"); deleted || err != nil {
				t.Errorf("second Delete: got %v, %v; want false, nil", deleted, err)
			}
		})
	}
}

// TestCreateNameTaken: a container that already has the name gets no
// second link, and no link is left under the temporary name.
func TestCreateNameTaken(t *testing.T) {
	netnstest.RequireRoot(t)
	host, cont := netnstest.NewNS(t), netnstest.NewNS(t)
	master := netnstest.Veth(t, host, "m0")
	netnstest.Veth(t, cont, "eth0")
	hostH, contH := netnstest.Handle(t, host), netnstest.Handle(t, cont)
	_, err := Create(hostH, contH, netns.NsHandle(cont.Fd()), false, Spec{Master: master, IfName: "eth0"})
	if !errors.Is(err, ErrNameTaken) {
		t.Errorf("got %v, want ErrNameTaken", err)
	}
	if _, err := contH.LinkByName(TempName("eth0")); err == nil {
		t.Errorf("a link is left under the temporary name %s", TempName("eth0"))
	}
}

// TestDeleteLeavesOtherLinks: DEL must not remove what another plugin made.
func TestDeleteLeavesOtherLinks(t *testing.T) {
	netnstest.RequireRoot(t)
	cont := netnstest.NewNS(t)
	netnstest.Veth(t, cont, "eth0")
	h := netnstest.Handle(t, cont)
	deleted, err := Delete(h, "eth0")
	if deleted || err == nil || !strings.Contains(err.Error(), "is a veth link, not a macvlan: left in place") {
		t.Errorf("got %v, %v; want false and a refusal", deleted, err)
	}
	if _, err := h.LinkByName("eth0"); err != nil {
		t.Errorf("eth0 is gone: %v", err)
	}
}

// TestCreateInContainer: with the master in the container, the link is
// made there.
func TestCreateInContainer(t *testing.T) {
	netnstest.RequireRoot(t)
	cont := netnstest.NewNS(t)
	master := netnstest.Veth(t, cont, "m0")
	h := netnstest.Handle(t, cont)
	if _, err := Create(h, h, 0, true, Spec{Master: master, Mode: VEPA, IfName: "net1"}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := Verify(h, h, "net1", Expect{Master: "m0", MasterIndex: master.Attrs().Index, Mode: VEPA}); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Bridge: "bridge", Private: "private", VEPA: "vepa", Passthru: "passthru", Mode(9): "Mode(9)"} {
		if got := m.String(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if got, want := kernelModeName(netlink.MACVLAN_MODE_SOURCE), fmt.Sprintf("mode(%d)", netlink.MACVLAN_MODE_SOURCE); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestCreateRenamedTempNameTaken: on the renaming path (a kernel that
// checks names in the master's namespace), a link already under the
// temporary name (an ADD of the same attachment making its link right
// now) is ErrNameTaken too, so that the plugin does not give back the
// lease the other ADD holds; the other ADD's link is left alone.
func TestCreateRenamedTempNameTaken(t *testing.T) {
	netnstest.RequireRoot(t)
	host, cont := netnstest.NewNS(t), netnstest.NewNS(t)
	master := netnstest.Veth(t, host, "m0")
	hostH, contH := netnstest.Handle(t, host), netnstest.Handle(t, cont)
	netnstest.Veth(t, cont, TempName("eth0"))
	_, err := createRenamed(hostH, contH, netns.NsHandle(cont.Fd()), false, Spec{Master: master, IfName: "eth0"})
	if !errors.Is(err, ErrNameTaken) {
		t.Errorf("got %v, want ErrNameTaken", err)
	}
	if _, err := contH.LinkByName(TempName("eth0")); err != nil {
		t.Errorf("the other link under %s was removed: %v", TempName("eth0"), err)
	}
}

// TestCreateRenamed: the renaming path makes the same link, under its
// name, and leaves nothing under the temporary one.
func TestCreateRenamed(t *testing.T) {
	netnstest.RequireRoot(t)
	host, cont := netnstest.NewNS(t), netnstest.NewNS(t)
	master := netnstest.Veth(t, host, "m0")
	hostH, contH := netnstest.Handle(t, host), netnstest.Handle(t, cont)
	link, err := createRenamed(hostH, contH, netns.NsHandle(cont.Fd()), false, Spec{Master: master, Mode: Private, IfName: "eth0"})
	if err != nil {
		t.Fatalf("createRenamed: %v", err)
	}
	if link.Attrs().Name != "eth0" {
		t.Errorf("got link %q, want eth0", link.Attrs().Name)
	}
	if err := Verify(contH, hostH, "eth0", Expect{Master: "m0", MasterIndex: master.Attrs().Index, Mode: Private}); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if _, err := contH.LinkByName(TempName("eth0")); err == nil {
		t.Errorf("a link is left under the temporary name %s", TempName("eth0"))
	}
}

// TestCreateBesideAHostInterfaceOfTheSameName: the host has an interface
// named as the container's will be (a master called eth0, say). A kernel
// that checks the name in the host refuses the first request, and the
// link is made under the temporary name and renamed; a recent one makes
// it straight away. Either way the container gets it and nothing else.
func TestCreateBesideAHostInterfaceOfTheSameName(t *testing.T) {
	netnstest.RequireRoot(t)
	host, cont := netnstest.NewNS(t), netnstest.NewNS(t)
	master := netnstest.Veth(t, host, "eth0")
	hostH, contH := netnstest.Handle(t, host), netnstest.Handle(t, cont)
	link, err := Create(hostH, contH, netns.NsHandle(cont.Fd()), false, Spec{Master: master, IfName: "eth0"})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := Verify(contH, hostH, "eth0", Expect{Master: "eth0", MasterIndex: master.Attrs().Index, Mode: Bridge}); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if link.Type() != "macvlan" || link.Attrs().Name != "eth0" {
		t.Errorf("got %s link %q, want macvlan eth0", link.Type(), link.Attrs().Name)
	}
	if l, err := hostH.LinkByName("eth0"); err != nil || l.Type() != "veth" {
		t.Errorf("the host's eth0 changed: %v, %v", l, err)
	}
	for name, h := range map[string]netlinksafe.Handle{"host": hostH, "container": contH} {
		if _, err := h.LinkByName(TempName("eth0")); err == nil {
			t.Errorf("a link is left in the %s under the temporary name %s", name, TempName("eth0"))
		}
	}
}

// TestCreateBesideALeftoverTempLink: a link an older ADD left under the
// temporary name does not stand in the way of one made under its own name
// (DEL removes the leftover).
func TestCreateBesideALeftoverTempLink(t *testing.T) {
	netnstest.RequireRoot(t)
	host, cont := netnstest.NewNS(t), netnstest.NewNS(t)
	master := netnstest.Veth(t, host, "m0")
	hostH, contH := netnstest.Handle(t, host), netnstest.Handle(t, cont)
	netnstest.Veth(t, cont, TempName("eth0"))
	if _, err := Create(hostH, contH, netns.NsHandle(cont.Fd()), false, Spec{Master: master, IfName: "eth0"}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := Verify(contH, hostH, "eth0", Expect{Master: "m0", MasterIndex: master.Attrs().Index, Mode: Bridge}); err != nil {
		t.Errorf("Verify: %v", err)
	}
}
