package main

import (
	"context"

	"github.com/kuryr-pools/kuryr/netns"
)

// localTeardown removes the pod interface when the agent is unreachable on DEL. Deleting the link
// by name is enough: a VLAN or veth leaves with it, and the agent reconciles the port later.
func localTeardown(ctx context.Context, netnsPath, ifName string) error {
	return netns.Unplug(ctx, netns.Attachment{Mode: netns.ModeVLAN, NetnsPath: netnsPath, IfName: ifName})
}
