package netns

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// OVS is driven through ovs-vsctl, as kuryr and os-vif do: the agent needs three commands, and the
// binary speaks every OVSDB schema version the node's OVS may have, which an OVSDB library would not.

// ovsTimeout bounds each ovs-vsctl run. Without --no-wait, ovs-vsctl waits until ovs-vswitchd has
// applied the change, so the port forwards traffic when Plug returns; a dead vswitchd must not
// block a CNI ADD forever.
const ovsTimeout = 10 * time.Second

// OVSVsctl is the ovs-vsctl binary; tests and unusual installs may point it elsewhere.
var OVSVsctl = "ovs-vsctl"

func ovsVsctl(ctx context.Context, db string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, ovsTimeout)
	defer cancel()
	full := []string{"--timeout=" + strconv.Itoa(int(ovsTimeout/time.Second))}
	if db != "" {
		full = append(full, "--db="+db)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, OVSVsctl, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", OVSVsctl, strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// ovsAddPort adds the host veth to the bridge with the external_ids neutron-openvswitch-agent (or
// OVN) binds the Neutron port by.
func ovsAddPort(ctx context.Context, a Attachment, dev string) error {
	args := []string{
		"--", "--may-exist", "add-port", a.Bridge, dev,
		"--", "set", "Interface", dev,
		"external_ids:iface-id=" + ovsString(a.PortID),
		"external_ids:attached-mac=" + ovsString(a.MAC.String()),
		"external_ids:iface-status=active",
	}
	if a.PodUID != "" {
		args = append(args, "external_ids:vm-uuid="+ovsString(a.PodUID))
	}
	if _, err := ovsVsctl(ctx, a.OVSDB, args...); err != nil {
		return fmt.Errorf("add %s to OVS bridge %s: %w", dev, a.Bridge, err)
	}
	return nil
}

// ovsDelPort removes the port; a missing port is fine (Unplug is idempotent).
func ovsDelPort(ctx context.Context, db, bridge, dev string) error {
	if _, err := ovsVsctl(ctx, db, "--if-exists", "del-port", bridge, dev); err != nil {
		return fmt.Errorf("remove %s from OVS bridge %s: %w", dev, bridge, err)
	}
	return nil
}

// ovsIfaceID reads external_ids:iface-id of the interface ("" when the interface has none).
func ovsIfaceID(ctx context.Context, db, dev string) (string, error) {
	out, err := ovsVsctl(ctx, db, "--if-exists", "get", "Interface", dev, "external_ids:iface-id")
	if err != nil {
		return "", err
	}
	return strings.Trim(out, `"`), nil
}

// ovsString quotes a value in OVSDB's string syntax so that colons (MACs) and other specials are
// taken literally.
func ovsString(s string) string {
	return strconv.Quote(s)
}
