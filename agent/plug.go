package agent

import (
	"context"
	"fmt"
	"net"

	"github.com/kuryr-pools/kuryr/netns"
)

// PlugParams is how an attachment was plugged, kept in the checkpoint so that DEL and CHECK work
// from local state alone.
type PlugParams struct {
	Mode       string   `json:"mode"` // vlan | ovs | bridge
	MAC        string   `json:"mac"`
	MTU        int      `json:"mtu"`
	Addresses  []string `json:"addresses"` // CIDR notation: the port IP with the subnet prefix length
	Gateway    string   `json:"gateway,omitempty"`
	Routes     []Route  `json:"routes,omitempty"`
	VLAN       int      `json:"vlan,omitempty"`
	Parent     string   `json:"parent,omitempty"`
	Bridge     string   `json:"bridge,omitempty"`
	HostIfName string   `json:"hostIfName,omitempty"`
}

// Route is a subnet host route.
type Route struct {
	Dst string `json:"dst"`
	GW  string `json:"gw"`
}

// NetnsPlugger plugs attachments with package netns.
type NetnsPlugger struct {
	// OVSDB is passed to ovs-vsctl --db ("" = its default).
	OVSDB string
}

// Attachment converts a checkpoint attachment into what package netns plugs.
func (p NetnsPlugger) Attachment(a *Attachment) (netns.Attachment, error) {
	na := netns.Attachment{
		Mode: netns.Mode(a.Plug.Mode), NetnsPath: a.Netns, IfName: a.IfName, PortID: a.Port.ID, MTU: a.Plug.MTU,
		VLAN: a.Plug.VLAN, Parent: a.Plug.Parent, Bridge: a.Plug.Bridge, PodUID: a.Pod.UID, OVSDB: p.OVSDB,
	}
	var err error
	if na.MAC, err = net.ParseMAC(a.Plug.MAC); err != nil {
		return na, fmt.Errorf("port %s: MAC %q: %w", a.Port.ID, a.Plug.MAC, err)
	}
	for _, addr := range a.Plug.Addresses {
		ip, ipnet, err := net.ParseCIDR(addr)
		if err != nil {
			return na, fmt.Errorf("port %s: address %q: %w", a.Port.ID, addr, err)
		}
		na.Addresses = append(na.Addresses, net.IPNet{IP: ip, Mask: ipnet.Mask})
	}
	if a.Plug.Gateway != "" {
		if na.Gateway = net.ParseIP(a.Plug.Gateway); na.Gateway == nil {
			return na, fmt.Errorf("port %s: gateway %q is not an IP address", a.Port.ID, a.Plug.Gateway)
		}
	}
	for _, r := range a.Plug.Routes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return na, fmt.Errorf("port %s: host route %q: %w", a.Port.ID, r.Dst, err)
		}
		na.Routes = append(na.Routes, netns.Route{Dst: *dst, GW: net.ParseIP(r.GW)})
	}
	return na, nil
}

// Plug creates the pod interface.
func (p NetnsPlugger) Plug(ctx context.Context, a *Attachment) error {
	na, err := p.Attachment(a)
	if err != nil {
		return err
	}
	_, err = netns.Plug(ctx, na)
	return err
}

// Unplug removes the pod interface (and the host end, OVS port).
func (p NetnsPlugger) Unplug(ctx context.Context, a *Attachment) error {
	na, err := p.Attachment(a)
	if err != nil {
		return err
	}
	return netns.Unplug(ctx, na)
}

// UnplugIfName removes ifName from the netns when nothing else is known about it.
func (p NetnsPlugger) UnplugIfName(ctx context.Context, netnsPath, ifName string) error {
	return netns.Unplug(ctx, netns.Attachment{Mode: netns.ModeVLAN, NetnsPath: netnsPath, IfName: ifName})
}

// Check verifies the pod interface.
func (p NetnsPlugger) Check(ctx context.Context, a *Attachment) error {
	na, err := p.Attachment(a)
	if err != nil {
		return err
	}
	return netns.Check(ctx, na)
}
