// Package config decodes and validates the JSON configuration of the maclan
// plugins. It makes no system calls: facts about the host (a master's MTU, the
// default-route interface) are looked up by the packages that act on them, so
// that DEL can still parse a configuration whose master has gone.
package config

import "errors"

// ErrInvalid marks a configuration that can never work as written. The plugins
// report it with CNI error code 7 (invalid network configuration).
var ErrInvalid = errors.New("invalid configuration")

// ErrInvalidArgs marks a malformed CNI_ARGS string. The plugins report it
// with CNI error code 4 (invalid environment variables).
var ErrInvalidArgs = errors.New("invalid CNI_ARGS")

// ErrInvalidEnv marks a CNI environment variable that is unusable though
// skel let it through (an interface name that is not valid UTF-8, say).
// The plugins report it with CNI error code 4 as well.
var ErrInvalidEnv = errors.New("invalid CNI environment variable")
