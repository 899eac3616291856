// Command pause is the sandbox ("pause") process of the end-to-end test's pod:
// it holds the pod's namespaces open, reaps orphans as pid 1 and exits on
// SIGINT or SIGTERM. It is built static and packed into an OCI image by
// e2e/mkimage, so that the test needs no registry.
package main

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	for s := range sigs {
		if s != unix.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child, as pid 1 of a namespace must.
func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
