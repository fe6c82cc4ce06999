package agent

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kuryr-pools/kuryr/neutron"
)

func TestRefillFailureReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("create 10 ports: %w", &neutron.APIError{Status: 409, Type: "OverQuota", Message: "Quota exceeded for resources: ['port']."}), ReasonQuotaExceeded},
		{fmt.Errorf("attach to trunk t1: %w: 10 needed, 0 free", neutron.ErrNoFreeVLAN), ReasonVLANIDsExhausted},
		{fmt.Errorf("create: %w", &neutron.APIError{Status: 409, Type: "IpAddressGenerationFailure"}), ReasonRefillFailed},
		{errors.New("dial tcp 127.0.0.1:9696: connection refused"), ReasonRefillFailed},
	}
	for _, tc := range tests {
		if got := refillFailureReason(tc.err); got != tc.want {
			t.Errorf("refillFailureReason(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
