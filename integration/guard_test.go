//go:build integration

package integration

import (
	"context"
	"runtime"
	"strings"
	"testing"
)

// TestSafetyGuard checks the guard itself: outside the lab's host namespace
// no plugin is started. The configuration names a master that exists
// nowhere and no IPAM, so that even a broken guard could do no harm here.
func TestSafetyGuard(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := theLab.checkInHost(); err == nil {
		t.Fatal("the guard passes in the machine's own network namespace")
	}
	if err := theLab.inHost(func() error { return nil }); err != nil {
		t.Fatalf("the guard refuses the lab host namespace: %v", err)
	}

	n := newNet(t)
	conf := n.mainConf()
	conf["master"] = "mlt-none0"
	delete(conf, "ipam")
	c := newContainer(t)
	a := n.attach(n.list("1.0.0", conf), c, "eth0")
	_, err := n.cni.AddNetworkList(context.Background(), a.list, a.rt) // not in inHost: on purpose
	if err == nil || !strings.Contains(err.Error(), "safety guard") {
		t.Errorf("ADD from the machine's namespace: got %v, want the safety guard's refusal", err)
	}
	wantOnlyLoopback(t, c)
}
