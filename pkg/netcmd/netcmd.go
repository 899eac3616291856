// Package netcmd is "maclan network": create, list, inspect and remove
// maclan networks with the commands and flags of Docker's macvlan driver.
package netcmd

import (
	"fmt"
	"io"
)

// Main runs "maclan network ARGS" and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "maclan network: not implemented yet")
	return 2
}
