// Package cnierr turns the errors of maclan's packages into CNI errors with
// the well-known codes of the CNI specification (SPEC.md, "Error"). Only the
// plugins' main packages use it; the packages below return plain wrapped
// errors and know nothing of CNI codes.
package cnierr

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ifconfig"
	"github.com/maclan-cni/maclan/pkg/ipam/allocator"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// ErrNotAvailable marks a STATUS failure: the plugin cannot serve ADD now
// (master missing or down, no free address, store not writable). Code 50.
var ErrNotAvailable = errors.New("plugin not available")

// ErrTryAgain marks a condition expected to pass (a master without carrier,
// say): code 11, try again later.
var ErrTryAgain = errors.New("try again later")

// Codes of maclan's own (SPEC.md, "Error": 100 and above are the
// plugin's), so that a runtime or an operator can tell these outcomes
// apart without reading the message.
const (
	// CodeNoFreeAddress: a range set has no address left to hand out.
	CodeNoFreeAddress uint = 100
	// CodeAddressTaken: a requested address is held by another attachment.
	CodeAddressTaken uint = 101
	// CodeAddressInUse: the address is in use on the LAN (an ARP conflict,
	// or an IPv6 duplicate found by DAD).
	CodeAddressInUse uint = 102
)

// Code returns the CNI error code that fits err.
func Code(err error) uint {
	var te *types.Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &te):
		return te.Code
	case errors.Is(err, ErrNotAvailable):
		return types.ErrPluginNotAvailable
	case errors.Is(err, config.ErrInvalid):
		return types.ErrInvalidNetworkConfig
	case errors.Is(err, config.ErrInvalidArgs), errors.Is(err, config.ErrInvalidEnv):
		return types.ErrInvalidEnvironmentVariables
	case errors.Is(err, ErrTryAgain), errors.Is(err, store.ErrLockTimeout), errors.Is(err, store.ErrUnavailable):
		return types.ErrTryAgainLater
	case errors.Is(err, allocator.ErrInUseOnLAN), errors.Is(err, ifconfig.ErrDuplicateAddress):
		return CodeAddressInUse
	case errors.Is(err, allocator.ErrExhausted):
		return CodeNoFreeAddress
	case errors.Is(err, store.ErrReserved):
		return CodeAddressTaken
	default:
		return types.ErrInternal
	}
}

// New converts err to a *types.Error with the code that fits it. A
// *types.Error found in the chain (for example one returned by a delegated
// IPAM plugin) keeps its code, and the message keeps the whole chain.
func New(err error) *types.Error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) && te == err {
		return te
	}
	return &types.Error{Code: Code(err), Msg: err.Error()}
}
