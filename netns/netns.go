// Package netns does every netlink and network-namespace operation of the agent: it plugs a Neutron
// port into a pod's network namespace, checks it and unplugs it.
//
// Three bindings exist. Nested pods get a VLAN link on the VM's trunk parent, created directly inside
// the pod netns (ModeVLAN). Bare-metal pods get a veth pair whose host end sits on an Open vSwitch
// bridge (ModeOVS) or a Linux bridge (ModeBridge).
//
// The agent is a long-lived, multi-threaded process, so nothing here switches the calling thread's
// namespace: netlink work uses handles opened in the target netns (NETLINK_ROUTE only, closed after
// each call), and the one thing that needs a thread inside the pod netns (an ethtool ioctl) runs in
// ns.Do on a locked, throwaway thread. Calls act relative to the caller's own network namespace,
// which is the node's (tests call them from inside a namespace they created to stand for the node).
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Mode is how a port is plugged into the pod.
type Mode string

const (
	// ModeVLAN is the nested binding: a VLAN link with the subport's segmentation ID on the trunk parent.
	ModeVLAN Mode = "vlan"
	// ModeOVS is a veth pair whose host end is a port of an Open vSwitch bridge (br-int).
	ModeOVS Mode = "ovs"
	// ModeBridge is a veth pair whose host end is enslaved to a Linux bridge.
	ModeBridge Mode = "bridge"
)

// Attachment is one port plugged (or to be plugged) into one pod interface.
type Attachment struct {
	Mode      Mode
	NetnsPath string           // CNI_NETNS
	IfName    string           // CNI_IFNAME
	PortID    string           // Neutron port ID: host veth name HostIfName(PortID), OVS iface-id
	MAC       net.HardwareAddr // the port's MAC, set on the pod interface
	MTU       int              // network MTU; 0 = the parent's (vlan) or the bridge's (veth)
	Addresses []net.IPNet      // the port's fixed IPs with the subnet prefix length
	Gateway   net.IP           // default route via this address (nil = no default route)
	Routes    []Route          // the subnet's host_routes
	VLAN      int              // vlan mode: segmentation ID
	Parent    string           // vlan mode: trunk parent link ([binding] link_iface or DetectParent)
	Bridge    string           // ovs/bridge mode: bridge name
	PodUID    string           // ovs mode: external_ids:vm-uuid (omitted when empty)
	OVSDB     string           // ovs mode: ovs-vsctl --db=... ("" = ovs-vsctl's default)
}

// Route is one subnet host route.
type Route struct {
	Dst net.IPNet
	GW  net.IP
}

// Result is what Plug did, for the CNI result.
type Result struct {
	HostIfName   string // host end of the veth; "" in vlan mode (the VLAN has no host end)
	ContainerMAC net.HardwareAddr
	Sandbox      string
	MTU          int // the MTU the pod interface got
}

const (
	// tempPrefix names links while they are being set up inside the pod netns, before the rename to
	// IfName. Unplug removes leftovers carrying it (an agent killed mid-Plug).
	tempPrefix = "kurtmp"
	// hostPrefix + 11 characters of the port ID is kuryr's host veth name (os_vif_util.py).
	hostPrefix = "tap"
	maxIfName  = 15 // IFNAMSIZ - 1
)

// HostIfName is the host end of a port's veth: "tap" + the first 11 characters of its port ID, as
// kuryr (and nova) name it, so that existing tooling finds it.
func HostIfName(portID string) string {
	if len(portID) > 11 {
		portID = portID[:11]
	}
	return hostPrefix + portID
}

// Plug plugs the port into the pod netns. On any error nothing is left behind.
func Plug(ctx context.Context, a Attachment) (Result, error) {
	if err := a.validate(true); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	switch a.Mode {
	case ModeVLAN:
		return plugVLAN(ctx, a)
	default:
		return plugVeth(ctx, a)
	}
}

// Unplug removes what Plug created. It is idempotent: a netns or link that is already gone counts as
// success. The link is deleted explicitly rather than left to die with the netns, because a netns
// can outlive the pod (held by a process or a bind mount) and would keep the VLAN ID busy on the
// parent.
func Unplug(ctx context.Context, a Attachment) error {
	if err := a.validate(false); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	switch a.Mode {
	case ModeVLAN:
		return unplugVLAN(ctx, a)
	default:
		return unplugVeth(ctx, a)
	}
}

// Check verifies that the pod interface is as Plug left it: it exists with the right kind (and VLAN
// ID and parent, or host end and bridge), MAC, MTU, admin state, addresses, default route and host
// routes. The error lists every mismatch found.
func Check(ctx context.Context, a Attachment) error {
	if err := a.validate(true); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return check(ctx, a)
}

// validate checks the attachment. Unplug needs less than Plug and Check: the netns, the ifname, and
// what names the host side.
func (a *Attachment) validate(full bool) error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	switch a.Mode {
	case ModeVLAN, ModeOVS, ModeBridge:
	default:
		bad("mode %q is not one of vlan, ovs, bridge", a.Mode)
	}
	if a.NetnsPath == "" {
		bad("netns path is empty")
	}
	if err := validIfName(a.IfName); err != nil {
		bad("ifname: %v", err)
	}
	if a.Mode == ModeOVS || a.Mode == ModeBridge {
		if a.PortID == "" {
			bad("port ID is empty (it names the host veth)")
		} else if err := validIfName(HostIfName(a.PortID)); err != nil {
			bad("port ID %q: host veth name: %v", a.PortID, err)
		}
		if err := validIfName(a.Bridge); err != nil {
			bad("bridge: %v", err)
		}
	}
	if a.Mode == ModeVLAN {
		if a.VLAN != 0 || full {
			if a.VLAN < 1 || a.VLAN > 4094 {
				bad("VLAN ID %d is outside 1-4094", a.VLAN)
			}
		}
		if a.Parent != "" || full {
			if err := validIfName(a.Parent); err != nil {
				bad("parent: %v", err)
			}
		}
	}
	if a.MAC != nil || full {
		switch {
		case len(a.MAC) != 6:
			bad("MAC %q is not a 6-byte Ethernet address", a.MAC)
		case a.MAC[0]&1 == 1:
			bad("MAC %s is a multicast address", a.MAC)
		case isZero(a.MAC):
			bad("MAC %s is all zeroes", a.MAC)
		}
	}
	if !full {
		return joinErrs(a, errs)
	}
	if a.MTU != 0 && (a.MTU < 68 || a.MTU > 65535) {
		bad("MTU %d is outside 68-65535", a.MTU)
	}
	var have4, have6 bool
	for _, ipn := range a.Addresses {
		if ipn.IP == nil || ipn.Mask == nil {
			bad("address %v has no IP or no prefix length", ipn)
			continue
		}
		if ones, bits := ipn.Mask.Size(); bits == 0 || (bits == 32) != (ipn.IP.To4() != nil) || ones == 0 {
			bad("address %s has a bad prefix length", ipn.String())
			continue
		}
		if ipn.IP.To4() != nil {
			have4 = true
		} else {
			have6 = true
		}
	}
	if a.Gateway != nil {
		if v4 := a.Gateway.To4() != nil; (v4 && !have4) || (!v4 && !have6) {
			bad("gateway %s has no address of its family on the interface", a.Gateway)
		}
	}
	for _, r := range a.Routes {
		if r.Dst.IP == nil || r.Dst.Mask == nil {
			bad("host route %v has no destination", r)
			continue
		}
		if r.GW != nil && (r.GW.To4() != nil) != (r.Dst.IP.To4() != nil) {
			bad("host route %s via %s mixes address families", r.Dst.String(), r.GW)
		}
	}
	return joinErrs(a, errs)
}

func joinErrs(a *Attachment, errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid attachment (port %q, netns %q, ifname %q): %s",
		a.PortID, a.NetnsPath, a.IfName, strings.Join(errs, "; "))
}

func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > maxIfName:
		return fmt.Errorf("%q is longer than %d bytes", name, maxIfName)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a valid interface name", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("%q contains '/', ':' or whitespace", name)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// isNetnsGone tells whether ns.GetNS failed because the netns no longer exists: the path is missing,
// or it is a leftover mount point that is no longer a network namespace.
func isNetnsGone(err error) bool {
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	return errors.As(err, &notExist) || errors.As(err, &notNS)
}
