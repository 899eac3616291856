package cnierr

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/maclan-cni/maclan/pkg/config"
	"github.com/maclan-cni/maclan/pkg/ifconfig"
	"github.com/maclan-cni/maclan/pkg/ipam/allocator"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

func TestCode(t *testing.T) {
	delegated := &types.Error{Code: types.ErrTryAgainLater, Msg: "ipam busy"}
	tests := []struct {
		name string
		err  error
		want uint
	}{
		{"invalid config", fmt.Errorf("field \"mode\": %w", config.ErrInvalid), types.ErrInvalidNetworkConfig},
		{"malformed CNI_ARGS", fmt.Errorf("pair \"x\": %w", config.ErrInvalidArgs), types.ErrInvalidEnvironmentVariables},
		{"lock timeout", fmt.Errorf("lock: %w", store.ErrLockTimeout), types.ErrTryAgainLater},
		{"store unavailable", fmt.Errorf("etcd: %w", store.ErrUnavailable), types.ErrTryAgainLater},
		{"not available", fmt.Errorf("master eth0 is down: %w", ErrNotAvailable), types.ErrPluginNotAvailable},
		{"delegated error keeps its code", fmt.Errorf("ipam: %w", delegated), types.ErrTryAgainLater},
		{"no free address", fmt.Errorf("range set 0: %w", allocator.ErrExhausted), CodeNoFreeAddress},
		{"full, and STATUS", fmt.Errorf("%w: %w", ErrNotAvailable, allocator.ErrExhausted), types.ErrPluginNotAvailable},
		{"requested address taken", fmt.Errorf("requested address 10.0.0.5: %w", store.ErrReserved), CodeAddressTaken},
		{"conflict record", fmt.Errorf("in use by 02:00:00:00:00:01: %w: %w", allocator.ErrInUseOnLAN, store.ErrReserved), CodeAddressInUse},
		{"DAD duplicate", fmt.Errorf("fd00::5: %w", ifconfig.ErrDuplicateAddress), CodeAddressInUse},
		{"anything else", errors.New("boom"), types.ErrInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Code(tt.err); got != tt.want {
				t.Errorf("Code(%v) = %d, want %d", tt.err, got, tt.want)
			}
			if got := New(tt.err); got.Code != tt.want || got.Msg != tt.err.Error() {
				t.Errorf("New(%v) = {%d %q}, want {%d %q}", tt.err, got.Code, got.Msg, tt.want, tt.err.Error())
			}
		})
	}
}
