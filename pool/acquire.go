package pool

import (
	"errors"
	"fmt"
	"time"
)

// AcquireRequest asks a Driver for a port for one pod attachment.
type AcquireRequest struct {
	Key       Key
	SubnetIDs []string // subnets new ports of this pool are created on
	SGs       SGSet
	Owner     string // "<containerID>/<ifname>"
	// OnWait, when set, is called (from the waiting goroutine) when the request has to wait for a
	// refill, and again when the reason changes, so that the caller can tell the pod why.
	OnWait func(reason string)
}

// ErrPoolEmpty is matched by every "no port available in time" error.
var ErrPoolEmpty = errors.New("pool empty")

// PoolEmptyError says why a request got no port before its deadline.
type PoolEmptyError struct {
	Key      Key
	Waited   time.Duration
	InFlight int
	// Reason is the last refill failure (Neutron error, quota, no VLAN IDs left) or "refill in flight".
	Reason string
}

func (e *PoolEmptyError) Error() string {
	return fmt.Sprintf("no free port in pool %s after %s (%d in flight): %s", e.Key, e.Waited.Round(time.Millisecond), e.InFlight, e.Reason)
}

// Is makes errors.Is(err, ErrPoolEmpty) true.
func (e *PoolEmptyError) Is(target error) bool { return target == ErrPoolEmpty }
