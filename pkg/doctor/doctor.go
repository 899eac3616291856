// Package doctor is "maclan doctor": it checks what a macvlan network needs
// from the host and the LAN, and says what to fix.
package doctor

import (
	"fmt"
	"io"
)

// Main runs "maclan doctor ARGS" and returns the exit status: 0 only when
// no check failed.
func Main(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "maclan doctor: not implemented yet")
	return 2
}
