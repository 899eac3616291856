// Package integration holds maclan's end-to-end tests. They need root and
// the build tag "integration"; they build a lab of network namespaces (a
// switch, a host, a gateway and one namespace per container), run the built
// plugins in it through libcni and cnitool, and check the kernel state and
// real traffic. See lab_test.go for the lab and `make test-integration`.
// Files named *_helpers_test.go hold only shared helpers; every other
// _test.go file holds tests.
package integration
