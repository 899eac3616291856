package main

import (
	"fmt"
	"io"
	"os"

	"github.com/maclan-cni/maclan/pkg/doctor"
	"github.com/maclan-cni/maclan/pkg/netcmd"
)

const cliUsage = `usage: maclan COMMAND [flags]   (run by a CNI runtime when CNI_COMMAND is set)

  network create|ls|inspect|rm ...   manage maclan networks as Docker's macvlan driver does
  doctor [NETWORK...]                say why a network on the LAN stays silent
  version
`

// cliMain runs maclan's commands for people: maclan run by hand, without
// CNI_COMMAND. It returns the exit status.
func cliMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, cliUsage)
		return 2
	}
	switch args[0] {
	case "network":
		return netcmd.Main(args[1:], stdout, stderr)
	case "doctor":
		return doctor.Main(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "maclan", buildVersion)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, cliUsage)
		return 0
	}
	fmt.Fprintf(stderr, "maclan: unknown command %q\n%s", args[0], cliUsage)
	return 2
}

// runByHand reports whether maclan was started by a person rather than by
// a CNI runtime, which always sets CNI_COMMAND.
func runByHand() bool {
	return os.Getenv("CNI_COMMAND") == "" && len(os.Args) > 1
}
