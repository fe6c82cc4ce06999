package netns

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// plugVLAN creates the VLAN on the trunk parent directly inside the pod netns under a temporary name
// (no move across namespaces: that serializes on the kernel's rcu_barrier, and the final name may
// exist on the node), then renames and configures it there.
func plugVLAN(ctx context.Context, a Attachment) (Result, error) {
	logger := klog.FromContext(ctx).WithValues("port", a.PortID, "netns", a.NetnsPath, "ifname", a.IfName, "vlan", a.VLAN)
	h, err := openHandles(a.NetnsPath)
	if err != nil {
		return Result{}, fmt.Errorf("plug VLAN %d: open netns %s: %w", a.VLAN, a.NetnsPath, err)
	}
	defer h.close()

	parent, err := h.host.LinkByName(a.Parent)
	if err != nil {
		return Result{}, fmt.Errorf("plug VLAN %d: parent link %s: %w", a.VLAN, a.Parent, err)
	}
	mtu, err := vlanMTU(a.MTU, parent)
	if err != nil {
		return Result{}, fmt.Errorf("plug VLAN %d into netns %s: %w", a.VLAN, a.NetnsPath, err)
	}
	// A previous attempt for this attachment (agent restart, retried ADD) may have left the link.
	if found, err := deleteLinkIfExists(h.ph, a.IfName); err != nil {
		return Result{}, fmt.Errorf("plug VLAN %d: remove leftover in netns %s: %w", a.VLAN, a.NetnsPath, err)
	} else if found {
		logger.Info("Deleted a leftover pod interface before plugging")
	}
	if err := deleteTempLinks(ctx, h.ph, a.NetnsPath); err != nil {
		return Result{}, fmt.Errorf("plug VLAN %d: %w", a.VLAN, err)
	}

	tmp := tempName()
	newVLAN := func() *netlink.Vlan {
		la := netlink.NewLinkAttrs()
		la.Name = tmp
		la.ParentIndex = parent.Attrs().Index
		la.Namespace = h.podFd()
		la.HardwareAddr = a.MAC
		la.MTU = mtu
		return &netlink.Vlan{LinkAttrs: la, VlanId: a.VLAN, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}
	}
	err = h.host.LinkAdd(newVLAN())
	if errors.Is(err, unix.EEXIST) {
		// The kernel allows one link per VLAN ID on a parent across all namespaces: an old pod's
		// netns that outlived its DEL still holds it. Remove that link and retry once, as kuryr does.
		n, cerr := removeVLANHolders(ctx, parent, a.VLAN, nil)
		if cerr != nil {
			return Result{}, fmt.Errorf("create VLAN %d on %s in netns %s: VLAN ID in use, and removing the stale link failed: %w",
				a.VLAN, a.Parent, a.NetnsPath, cerr)
		}
		logger.Info("VLAN ID was held by stale links; deleted them and retrying", "deleted", n)
		err = h.host.LinkAdd(newVLAN())
	}
	if err != nil {
		return Result{}, fmt.Errorf("create VLAN %d on %s in netns %s: %w", a.VLAN, a.Parent, a.NetnsPath, err)
	}
	success := false
	defer func() {
		if success {
			return
		}
		// The link is under its temporary name or already renamed; delete whichever exists so that
		// the VLAN ID is free again.
		for _, name := range []string{tmp, a.IfName} {
			if _, err := deleteLinkIfExists(h.ph, name); err != nil {
				logger.Error(err, "Rollback of a failed plug left a link behind", "link", name)
			}
		}
	}()

	if err := finishPodLink(h.ph, a, tmp); err != nil {
		return Result{}, fmt.Errorf("plug VLAN %d: %w", a.VLAN, err)
	}
	success = true
	logger.V(4).Info("Plugged VLAN", "parent", a.Parent, "mtu", mtu)
	return Result{ContainerMAC: a.MAC, Sandbox: a.NetnsPath, MTU: mtu}, nil
}

// vlanMTU is the MTU the VLAN gets: the network's, which must fit in the parent's (kuryr refuses a
// network MTU above the VM NIC's, bug 1863212), or the parent's when the network gives none.
func vlanMTU(network int, parent netlink.Link) (int, error) {
	p := parent.Attrs().MTU
	if network == 0 {
		return p, nil
	}
	if network > p {
		return 0, fmt.Errorf("network MTU %d is larger than MTU %d of parent %s", network, p, parent.Attrs().Name)
	}
	return network, nil
}

// unplugVLAN deletes the pod's VLAN link. When the netns path is gone but the netns may linger
// (held by a process), it finds the link by parent, VLAN ID and MAC in every netns instead.
func unplugVLAN(ctx context.Context, a Attachment) error {
	logger := klog.FromContext(ctx).WithValues("port", a.PortID, "netns", a.NetnsPath, "ifname", a.IfName, "vlan", a.VLAN)
	h, err := openHandles(a.NetnsPath)
	if isNetnsGone(err) {
		if a.Parent == "" || a.VLAN == 0 || a.MAC == nil {
			return nil
		}
		return unplugLingeringVLAN(ctx, a)
	}
	if err != nil {
		return fmt.Errorf("unplug VLAN %d: open netns %s: %w", a.VLAN, a.NetnsPath, err)
	}
	defer h.close()
	found, err := deleteLinkIfExists(h.ph, a.IfName)
	if err != nil {
		return fmt.Errorf("unplug VLAN %d from netns %s: %w", a.VLAN, a.NetnsPath, err)
	}
	if err := deleteTempLinks(ctx, h.ph, a.NetnsPath); err != nil {
		return fmt.Errorf("unplug VLAN %d: %w", a.VLAN, err)
	}
	logger.V(4).Info("Unplugged VLAN", "found", found)
	return nil
}

func unplugLingeringVLAN(ctx context.Context, a Attachment) error {
	host, err := openHostHandle()
	if err != nil {
		return err
	}
	parent, err := host.LinkByName(a.Parent)
	host.Close()
	if isNotFound(err) {
		return nil // no parent, no VLAN on it
	}
	if err != nil {
		return fmt.Errorf("unplug VLAN %d: parent link %s: %w", a.VLAN, a.Parent, err)
	}
	n, err := removeVLANHolders(ctx, parent, a.VLAN, a.MAC)
	if err != nil {
		return fmt.Errorf("unplug VLAN %d (netns %s is gone): %w", a.VLAN, a.NetnsPath, err)
	}
	if n > 0 {
		klog.FromContext(ctx).Info("Deleted the VLAN link of a pod whose netns path is gone but whose netns lingered",
			"port", a.PortID, "netns", a.NetnsPath, "vlan", a.VLAN, "parent", a.Parent)
	}
	return nil
}
