// Command maclan-ipam-etcd is maclan-ipam with the etcd client linked in,
// built with -tags etcd. maclan-ipam hands it every call that names the etcd
// store (plugins/maclan-ipam/handoff.go), so that the client's size and
// start-up are paid only by the networks that use it.
package main

import ipamplugin "github.com/maclan-cni/maclan/plugins/maclan-ipam"

func main() { ipamplugin.Main() }
