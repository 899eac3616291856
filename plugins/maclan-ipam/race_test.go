//go:build race

package ipamplugin

// Under `go test -race` (make race) the binaries that the tests run,
// maclan-ipam and maclan-ipam-etcd, are built with the race detector too, so
// that the etcd store's code, which runs only in them, is checked as well.
func init() { buildFlags = append(buildFlags, "-race") }
