package main

import (
	"context"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// stateOnlyIPAM reports whether an IPAM plugin only keeps state (leases in
// files or a database) and never touches the container's interface, so that
// it can run while the link is made or torn down. Unknown IPAMs are assumed
// to need the interface.
func stateOnlyIPAM(plugin string) bool {
	switch plugin {
	case "maclan-ipam", "host-local", "static":
		return true
	}
	return false
}

// ipamCall runs the IPAM's command verb to its end, if the network has an
// IPAM.
func ipamCall(verb, plugin string, stdin []byte) error {
	if plugin == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ipamTimeout)
	defer cancel()
	if _, err := delegate(ctx, verb, plugin, stdin); err != nil {
		return fmt.Errorf("IPAM %q %s: %w", plugin, verb, err)
	}
	return nil
}

// ipamAdd waits for the IPAM ADD started by startDelegate and converts its
// result.
func ipamAdd(plugin string, d *delegation) (*current.Result, error) {
	r, err := d.result()
	if err != nil {
		return nil, fmt.Errorf("IPAM %q ADD: %w", plugin, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("IPAM %q ADD: convert result: %w", plugin, err)
	}
	if len(res.IPs) == 0 {
		return nil, fmt.Errorf("IPAM %q ADD returned no IP address", plugin)
	}
	return res, nil
}

// ipamRelease is a DEL's IPAM call under way; a nil one has nothing to
// wait for.
type ipamRelease struct {
	plugin  string
	pending *delegation
}

// startRelease forks the IPAM's DEL, if the network has an IPAM. The child
// is forked from the calling thread, which must still be in the runtime's
// namespace.
func startRelease(ctx context.Context, plugin string, stdin []byte, tr *tracer) (*ipamRelease, error) {
	if plugin == "" {
		return nil, nil
	}
	d, err := startDelegate(ctx, "DEL", plugin, stdin)
	tr.step("ipam start")
	if err == nil && d.inProcess() {
		tr.mark("ipam in process")
	}
	if err != nil {
		return nil, fmt.Errorf("IPAM %q DEL: %w", plugin, err)
	}
	return &ipamRelease{plugin: plugin, pending: d}, nil
}

// wait waits for the DEL, once: a second wait returns nil at once.
func (r *ipamRelease) wait(tr *tracer) error {
	if r == nil || r.pending == nil {
		return nil
	}
	_, err := r.pending.wait()
	r.pending = nil
	tr.step("ipam wait")
	if err != nil {
		return fmt.Errorf("IPAM %q DEL: %w", r.plugin, err)
	}
	return nil
}
