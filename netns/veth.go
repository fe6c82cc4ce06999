package netns

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// plugVeth creates the veth pair with its container end directly in the pod netns (kuryr creates it
// inside and moves the peer out; creating it in place avoids a netns move) and its host end,
// HostIfName(PortID), in the node netns; then it attaches the host end to OVS or the Linux bridge.
func plugVeth(ctx context.Context, a Attachment) (Result, error) {
	hostName := HostIfName(a.PortID)
	logger := klog.FromContext(ctx).WithValues("port", a.PortID, "netns", a.NetnsPath, "ifname", a.IfName, "host", hostName)
	h, err := openHandles(a.NetnsPath)
	if err != nil {
		return Result{}, fmt.Errorf("plug port %s: open netns %s: %w", a.PortID, a.NetnsPath, err)
	}
	defer h.close()

	mtu := a.MTU
	if mtu == 0 {
		// The bridge's MTU is what the port's traffic fits through; a Linux bridge that does not
		// exist yet is created with the kernel default, as is the veth.
		if br, err := h.host.LinkByName(a.Bridge); err == nil {
			mtu = br.Attrs().MTU
		}
	}
	// Leftovers of an earlier attempt (kuryr's BaseBridgeDriver.connect deletes the host end first).
	for _, lo := range []struct {
		h    netlinksafe.Handle
		name string
	}{{h.host, hostName}, {h.ph, a.IfName}} {
		if found, err := deleteLinkIfExists(lo.h, lo.name); err != nil {
			return Result{}, fmt.Errorf("plug port %s: remove leftover: %w", a.PortID, err)
		} else if found {
			logger.Info("Deleted a leftover link before plugging", "link", lo.name)
		}
	}
	if err := deleteTempLinks(ctx, h.ph, a.NetnsPath); err != nil {
		return Result{}, fmt.Errorf("plug port %s: %w", a.PortID, err)
	}

	tmp := tempName()
	la := netlink.NewLinkAttrs()
	la.Name = tmp
	la.Namespace = h.podFd()
	la.HardwareAddr = a.MAC
	if mtu > 0 {
		la.MTU = mtu // the peer gets the same MTU
	}
	veth := &netlink.Veth{LinkAttrs: la, PeerName: hostName, PeerTxQLen: -1}
	if err := h.host.LinkAdd(veth); err != nil {
		return Result{}, fmt.Errorf("create veth %s (host) / %s (netns %s) for port %s: %w", hostName, a.IfName, a.NetnsPath, a.PortID, err)
	}
	ovsAdded := false
	success := false
	defer func() {
		if success {
			return
		}
		if _, err := deleteLinkIfExists(h.host, hostName); err != nil { // takes the container end with it
			logger.Error(err, "Rollback of a failed plug left the veth behind")
		}
		if ovsAdded {
			if err := ovsDelPort(context.WithoutCancel(ctx), a.OVSDB, a.Bridge, hostName); err != nil {
				logger.Error(err, "Rollback of a failed plug left the OVS port behind")
			}
		}
	}()

	hostLink, err := h.host.LinkByName(hostName)
	if err != nil {
		return Result{}, fmt.Errorf("plug port %s: find host veth %s: %w", a.PortID, hostName, err)
	}
	if a.Mode == ModeOVS {
		// OVS's userspace (netdev) datapath does not complete checksums a veth leaves to offload:
		// without this, TCP through br-int times out (reference §5). Both ends need it.
		if err := setTxChecksum(hostName, false); err != nil {
			return Result{}, fmt.Errorf("plug port %s: %w", a.PortID, err)
		}
		if err := h.pod.Do(func(ns.NetNS) error { return setTxChecksum(tmp, false) }); err != nil {
			return Result{}, fmt.Errorf("plug port %s: in netns %s: %w", a.PortID, a.NetnsPath, err)
		}
	} else {
		br, err := ensureBridge(h.host, a.Bridge)
		if err != nil {
			return Result{}, fmt.Errorf("plug port %s: %w", a.PortID, err)
		}
		if err := h.host.LinkSetMaster(hostLink, br); err != nil {
			return Result{}, fmt.Errorf("plug port %s: attach %s to bridge %s: %w", a.PortID, hostName, a.Bridge, err)
		}
	}
	if err := h.host.LinkSetUp(hostLink); err != nil {
		return Result{}, fmt.Errorf("plug port %s: set %s up: %w", a.PortID, hostName, err)
	}
	if err := finishPodLink(h.ph, a, tmp); err != nil {
		return Result{}, fmt.Errorf("plug port %s: %w", a.PortID, err)
	}
	if a.Mode == ModeOVS {
		ovsAdded = true // --may-exist: a failure may still have created it; del-port is --if-exists
		if err := ovsAddPort(ctx, a, hostName); err != nil {
			return Result{}, fmt.Errorf("plug port %s: %w", a.PortID, err)
		}
	}
	success = true
	if mtu == 0 {
		mtu = hostLink.Attrs().MTU
	}
	logger.V(4).Info("Plugged veth", "mode", a.Mode, "bridge", a.Bridge, "mtu", mtu)
	return Result{HostIfName: hostName, ContainerMAC: a.MAC, Sandbox: a.NetnsPath, MTU: mtu}, nil
}

// ensureBridge returns the Linux bridge, creating it (up) when it is missing.
func ensureBridge(h netlinksafe.Handle, name string) (netlink.Link, error) {
	br, err := h.LinkByName(name)
	if isNotFound(err) {
		la := netlink.NewLinkAttrs()
		la.Name = name
		err = h.LinkAdd(&netlink.Bridge{LinkAttrs: la})
		if err != nil && !errors.Is(err, unix.EEXIST) { // EEXIST: a concurrent Plug created it
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		br, err = h.LinkByName(name)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("link %s is a %s, not a bridge", name, br.Type())
	}
	if br.Attrs().Flags&unix.IFF_UP == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("set bridge %s up: %w", name, err)
		}
	}
	return br, nil
}

// unplugVeth deletes the veth (the host end takes the container end with it), the container end
// alone if the host end is already gone, and the OVS port.
func unplugVeth(ctx context.Context, a Attachment) error {
	hostName := HostIfName(a.PortID)
	host, err := openHostHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	found, err := deleteLinkIfExists(host, hostName)
	if err != nil {
		return fmt.Errorf("unplug port %s: %w", a.PortID, err)
	}
	h, err := openHandles(a.NetnsPath)
	switch {
	case isNetnsGone(err):
	case err != nil:
		return fmt.Errorf("unplug port %s: open netns %s: %w", a.PortID, a.NetnsPath, err)
	default:
		defer h.close()
		if _, err := deleteLinkIfExists(h.ph, a.IfName); err != nil {
			return fmt.Errorf("unplug port %s from netns %s: %w", a.PortID, a.NetnsPath, err)
		}
		if err := deleteTempLinks(ctx, h.ph, a.NetnsPath); err != nil {
			return fmt.Errorf("unplug port %s: %w", a.PortID, err)
		}
	}
	if a.Mode == ModeOVS {
		if err := ovsDelPort(ctx, a.OVSDB, a.Bridge, hostName); err != nil {
			return fmt.Errorf("unplug port %s: %w", a.PortID, err)
		}
	}
	klog.FromContext(ctx).V(4).Info("Unplugged veth", "port", a.PortID, "host", hostName, "found", found)
	return nil
}

// HostVeth is the node end of a pod veth as Plug names it.
type HostVeth struct {
	Name       string // "tap" + PortPrefix
	PortPrefix string // the first 11 characters of the Neutron port ID
	Master     string // the kernel master (a Linux bridge, or ovs-system with the kernel datapath); "" for none
}

// ListHostVeths lists the veth links of the caller's netns that carry Plug's host-end names, so that
// the agent can reconcile them with its checkpoint at start (a veth whose port it no longer holds is
// a leftover to Unplug).
func ListHostVeths(ctx context.Context) ([]HostVeth, error) {
	h, err := openHostHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []HostVeth
	for _, l := range links {
		name := l.Attrs().Name
		if _, ok := l.(*netlink.Veth); !ok || len(name) <= len(hostPrefix) || name[:len(hostPrefix)] != hostPrefix {
			continue
		}
		out = append(out, HostVeth{Name: name, PortPrefix: name[len(hostPrefix):], Master: names[l.Attrs().MasterIndex]})
	}
	klog.FromContext(ctx).V(4).Info("Listed host veths", "count", len(out))
	return out, nil
}
