package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// handles are the netlink handles of one operation: one in the caller's (node) netns and one in the
// pod netns. Both speak NETLINK_ROUTE only: the default family list also opens XFRM and netfilter
// sockets, which fail in kernels without those modules (the test VM) and cost fds for nothing.
type handles struct {
	pod  ns.NetNS
	host netlinksafe.Handle
	ph   netlinksafe.Handle
}

// openHandles opens the pod netns and both handles. A missing netns is returned as is so that callers
// can tell it apart with isNetnsGone.
func openHandles(path string) (*handles, error) {
	pod, err := ns.GetNS(path)
	if err != nil {
		return nil, err
	}
	h := &handles{pod: pod}
	if h.host, err = netlinksafe.NewHandle(unix.NETLINK_ROUTE); err != nil {
		h.close()
		return nil, fmt.Errorf("open netlink handle in the node netns: %w", err)
	}
	if h.ph, err = netlinksafe.NewHandleAt(vnetns.NsHandle(pod.Fd()), unix.NETLINK_ROUTE); err != nil {
		h.close()
		return nil, fmt.Errorf("open netlink handle in netns %s: %w", path, err)
	}
	return h, nil
}

func (h *handles) close() {
	h.ph.Close()
	h.host.Close()
	if h.pod != nil {
		_ = h.pod.Close()
	}
}

// podFd is the pod netns as an IFLA_NET_NS_FD attribute: links are created directly in it.
func (h *handles) podFd() netlink.NsFd { return netlink.NsFd(int(h.pod.Fd())) }

// tempName is a random link name used while a link is set up inside the pod netns; the final name
// (IfName, usually eth0) may already exist where the link is created, so it is renamed last.
func tempName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return tempPrefix + hex.EncodeToString(b)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// deleteLinkIfExists deletes a link by name and reports whether there was one.
func deleteLinkIfExists(h netlinksafe.Handle, name string) (bool, error) {
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up link %s: %w", name, err)
	}
	if err := h.LinkDel(l); err != nil && !isNotFound(err) {
		return false, fmt.Errorf("delete link %s: %w", name, err)
	}
	return true, nil
}

// deleteTempLinks removes links a Plug interrupted mid-way left in the pod netns under a temporary
// name. Only this package creates names with tempPrefix.
func deleteTempLinks(ctx context.Context, h netlinksafe.Handle, where string) error {
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links in netns %s: %w", where, err)
	}
	for _, l := range links {
		if name := l.Attrs().Name; strings.HasPrefix(name, tempPrefix) {
			if err := h.LinkDel(l); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete leftover link %s in netns %s: %w", name, where, err)
			}
			klog.FromContext(ctx).Info("Deleted a leftover link of an interrupted plug", "link", name, "netns", where)
		}
	}
	return nil
}

// finishPodLink renames the freshly created link from its temporary name to ifName, brings it up and
// configures addresses and routes. The link must be down for the rename; it is at creation.
func finishPodLink(h netlinksafe.Handle, a Attachment, tmp string) error {
	l, err := h.LinkByName(tmp)
	if err != nil {
		return fmt.Errorf("find new link %s in netns %s: %w", tmp, a.NetnsPath, err)
	}
	if err := h.LinkSetName(l, a.IfName); err != nil {
		return fmt.Errorf("rename %s to %s in netns %s: %w", tmp, a.IfName, a.NetnsPath, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", a.IfName, a.NetnsPath, err)
	}
	return configureL3(h, l, a)
}

// configureL3 adds the port's addresses, the host routes and the default route, as kuryr's
// _configure_l3 does. IPv6 addresses skip duplicate address detection: the address is Neutron's and
// the pod must not wait for DAD before its first packet.
func configureL3(h netlinksafe.Handle, l netlink.Link, a Attachment) error {
	for _, ipn := range a.Addresses {
		addr := &netlink.Addr{IPNet: cloneIPNet(ipn)}
		if ipn.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("add address %s to %s in netns %s: %w", addr.IPNet, a.IfName, a.NetnsPath, err)
		}
	}
	for _, r := range a.Routes {
		rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: cloneIPNet(r.Dst), Gw: r.GW}
		if err := h.RouteAdd(rt); err != nil {
			return fmt.Errorf("add route %s via %v on %s in netns %s: %w", rt.Dst, r.GW, a.IfName, a.NetnsPath, err)
		}
	}
	if a.Gateway != nil {
		rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultDst(a.Gateway), Gw: a.Gateway}
		// EEXIST: another interface of the pod already holds the default route; kuryr keeps that one.
		if err := h.RouteAdd(rt); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add default route via %s on %s in netns %s: %w", a.Gateway, a.IfName, a.NetnsPath, err)
		}
	}
	return nil
}

// LinkExists reports whether ifName exists in the netns at netnsPath; a netns that is gone has no
// links. The agent's start-up reconciliation uses it: an attachment whose interface is gone (torn
// down by kuryr-cni while the agent was away) no longer holds its port.
func LinkExists(netnsPath, ifName string) (bool, error) {
	pod, err := ns.GetNS(netnsPath)
	if isNetnsGone(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer pod.Close()
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(pod.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return false, fmt.Errorf("open netlink handle in netns %s: %w", netnsPath, err)
	}
	defer h.Close()
	if _, err := h.LinkByName(ifName); err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("look up link %s in netns %s: %w", ifName, netnsPath, err)
	}
	return true, nil
}
