package neutron

import (
	"context"
	"time"
)

// SetBeforeAddSubports installs a hook run before each add_subports of AttachPorts, so a test can
// attach a subport behind the adapter's back between its read of the trunk and its write.
func SetBeforeAddSubports(c *Client, f func(ctx context.Context, trunkID string, subs []Subport, attempt int)) {
	c.beforeAddSubports = f
}

// SetBackoff shortens the retry backoff of the client's transport.
func SetBackoff(c *Client, f func(n int) time.Duration) { c.tr.backoff = f }

// SetNow replaces the client's clock (subnet cache, VLAN holds).
func SetNow(c *Client, now func() time.Time) { c.now = now }

// SetSweepDelay sets when the second sweep of a lost bulk create runs.
func SetSweepDelay(c *Client, d time.Duration) { c.sweepDelay = d }
