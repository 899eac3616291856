package ipamconf

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/maclan-cni/maclan/pkg/config"
)

// Defaults of the lease lifecycle fields (docs/ipam.md, "Lease lifecycle").
const (
	// DefaultStaleAfter is how old a lease whose namespace has gone must be
	// before it is reclaimed: long enough that a runtime's DEL in flight
	// (which removes the namespace after the plugins) is never raced.
	DefaultStaleAfter = 5 * time.Minute
	maxLifecycleAge   = 365 * 24 * time.Hour
	// maxWorkloadLen bounds a workload name: Kubernetes namespaces and pod
	// names are at most 63 and 253 bytes.
	maxWorkloadLen = 512
)

// Reclaim reports whether leases of an earlier boot are released by the
// first call after a boot (reclaimAfterReboot, default true).
func (c *Conf) Reclaim() bool { return c.ReclaimAfterReboot == nil || *c.ReclaimAfterReboot }

func (c *Conf) lifecycleDefaults() error {
	if c.StaleAfter == 0 {
		c.StaleAfter = Duration(DefaultStaleAfter)
	}
	for _, f := range []struct {
		name string
		d    Duration
	}{{"ipam.staleAfter", c.StaleAfter}, {"ipam.stickyFor", c.StickyFor}} {
		if d := time.Duration(f.d); d < 0 || d > maxLifecycleAge {
			return invalid("%s %s is outside [0, %s]", f.name, d, maxLifecycleAge)
		}
	}
	return nil
}

// collectWorkload names the workload from what the runtime says, first
// source wins: args.cni.workload; kubelet's K8S_POD_NAMESPACE and
// K8S_POD_NAME in CNI_ARGS (sent by containerd and CRI-O), with
// K8S_POD_UID; the Mesos isolator's network_info name and labels.
func (c *Conf) collectWorkload(env *envelope, cniArgs string) error {
	args, err := config.ParseCNIArgs(cniArgs)
	if err != nil {
		return err
	}
	c.HostAttachment = args["MACLAN_HOST_ATTACHMENT"] == "true"
	mesos := env.Args.Mesos.NetworkInfo
	switch {
	case env.Args.CNI.Workload != "":
		c.Workload = env.Args.CNI.Workload
	case args["K8S_POD_NAME"] != "":
		c.Workload = "k8s/" + args["K8S_POD_NAMESPACE"] + "/" + args["K8S_POD_NAME"]
		c.WorkloadUID = args["K8S_POD_UID"]
	case mesos.Name != "" || len(mesos.Labels.Labels) > 0:
		var labels []string
		for _, l := range mesos.Labels.Labels {
			labels = append(labels, l.Key+"="+l.Value)
		}
		slices.Sort(labels)
		c.Workload = "mesos/" + mesos.Name
		if len(labels) > 0 {
			c.Workload += "/" + strings.Join(labels, ",")
		}
	}
	if err := checkWorkload(c.Workload); err != nil {
		return invalid("workload: %w", err)
	}
	if err := checkWorkload(c.WorkloadUID); err != nil {
		return invalid("CNI_ARGS K8S_POD_UID: %w", err)
	}
	return nil
}

// checkWorkload keeps names printable and bounded: they are shown by
// "maclan-ipam ls" and written into log lines.
func checkWorkload(s string) error {
	if len(s) > maxWorkloadLen {
		return fmt.Errorf("%.20q... is %d bytes long, more than %d", s, len(s), maxWorkloadLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%q contains the unprintable character %U", s, r)
		}
	}
	return nil
}
