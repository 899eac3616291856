// Package holder says who holds a lease beyond its CNI attachment: the host
// and kernel boot a call runs in, and whether the network namespace a lease
// was taken for still exists. maclan-ipam records both with every lease so
// that it can give back the leases of containers that are gone without a
// DEL (after a reboot, or a runtime that lost its state).
package holder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Identity is the host and the kernel boot a call runs in.
type Identity struct {
	Host string
	Boot string
	// MachineID: Host is /etc/machine-id (or the test override), not the
	// hostname, which other hosts may share.
	MachineID bool
}

// The files the identity is read from, and the test-only overrides.
// MACLAN_TEST_HOST_ID and MACLAN_TEST_BOOT_ID stand in for them so that
// the integration tests can run several simulated hosts on one machine and
// simulate a reboot; they are not meant for production use.
const (
	machineIDFile = "/etc/machine-id"
	bootIDFile    = "/proc/sys/kernel/random/boot_id"
	hostEnv       = "MACLAN_TEST_HOST_ID"
	bootEnv       = "MACLAN_TEST_BOOT_ID"
)

// Current returns this host's identity: /etc/machine-id (else the hostname)
// and the kernel's boot ID, which is new at every boot.
func Current() (Identity, error) {
	host := os.Getenv(hostEnv)
	if host == "" {
		host = firstLine(machineIDFile)
	}
	machineID := host != ""
	if host == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return Identity{}, fmt.Errorf("host identity: no %s and no hostname: %w", machineIDFile, err)
		}
		host = h
	}
	boot := os.Getenv(bootEnv)
	if boot == "" {
		boot = firstLine(bootIDFile)
	}
	if boot == "" {
		return Identity{}, fmt.Errorf("boot identity: %s is unreadable", bootIDFile)
	}
	return Identity{Host: host, Boot: boot, MachineID: machineID}, nil
}

// BootTime returns when this boot began: the btime line of /proc/stat
// (proc(5)), in seconds since the epoch. It is zero when the boot is
// simulated (MACLAN_TEST_BOOT_ID) or /proc/stat is unreadable. It is not
// part of Identity because only the sweep after a reboot needs it, and
// /proc/stat, which the kernel generates on each read with a line per CPU
// and per interrupt, is slow to read on every call.
func BootTime() time.Time {
	if os.Getenv(bootEnv) != "" {
		return time.Time{}
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(secs, 0)
			}
		}
	}
	return time.Time{}
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// NetnsGone reports whether path no longer names a network namespace: it
// does not exist, or it is no longer an nsfs file (a runtime's bind mount
// under /run/netns that was unmounted, leaving the empty mount point). Any
// other error (permission, I/O) is returned: it proves nothing, and a
// lease must never be given back on a guess.
func NetnsGone(path string) (bool, error) {
	if path == "" {
		return false, errors.New("no namespace path recorded")
	}
	var st unix.Statfs_t
	err := unix.Statfs(path, &st)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENOTDIR):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type != unix.NSFS_MAGIC, nil
}
