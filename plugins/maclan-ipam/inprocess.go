package ipamplugin

import (
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// InProcess runs one CNI verb of maclan-ipam inside the calling process:
// the very code that the executable runs, on the same configuration bytes
// and CmdArgs, taking the same store lock and writing the same log line. A
// result goes to stdout as the executable prints it; a failure is the
// *types.Error that the executable would print. It is for maclan, whose
// own CmdArgs were parsed by skel from the environment and stdin that an
// exec of maclan-ipam would get, and which already passed skel's checks of
// them (the same skel, in the same executable).
//
// The etcd store is not served here (the default build does not link its
// client): InProcessable says whether a configuration may be.
func InProcess(verb string, args *skel.CmdArgs, stdout io.Writer) (err error) {
	defer func() {
		if p := recover(); p != nil {
			// The executable would have died; its caller would have seen
			// a failed plugin, not a crashed runtime call.
			err = &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("maclan-ipam %s panicked: %v", verb, p)}
		}
	}()
	funcs := verbs(stdout)
	var fn func(*skel.CmdArgs) error
	switch verb {
	case "ADD":
		fn = funcs.Add
	case "DEL":
		fn = funcs.Del
	case "CHECK":
		fn = funcs.Check
	case "GC":
		fn = funcs.GC
	case "STATUS":
		fn = funcs.Status
	default:
		return &types.Error{Code: types.ErrInvalidEnvironmentVariables, Msg: fmt.Sprintf("unknown CNI_COMMAND: %s", verb)}
	}
	if err := fn(args); err != nil {
		return err
	}
	return nil
}

// InProcessable reports whether a call with this configuration can run in
// process: not when it names the etcd store, which the executable hands to
// maclan-ipam-etcd.
func InProcessable(stdin []byte) bool {
	return etcdBuiltIn || !wantsEtcd(stdin)
}
