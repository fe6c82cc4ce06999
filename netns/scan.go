package netns

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// NetnsDirs are the directories where container runtimes bind-mount pod namespaces (containerd,
// CRI-O and `ip netns` all use /var/run/netns). The stale-link scan also walks /proc/*/ns/net for
// namespaces that only a process holds.
var NetnsDirs = []string{"/var/run/netns"}

// selfNetns is the calling thread's netns: the node's, from the agent; the one a test stands in.
const selfNetns = "/proc/thread-self/ns/net"

// VLANLink is a VLAN link found on a parent, in whatever netns holds it.
type VLANLink struct {
	Netns string // a path that reaches the netns (a bind mount, /proc/<pid>/ns/net, or the node's)
	Name  string
	VLAN  int
	MAC   net.HardwareAddr
}

// ListVLANs returns every VLAN link on the parent, in every network namespace reachable from
// NetnsDirs and /proc. The agent uses it at start to reconcile kernel links with its checkpoint.
func ListVLANs(ctx context.Context, parent string) ([]VLANLink, error) {
	var out []VLANLink
	err := scanVLANs(ctx, parent, func(_ netlinksafe.Handle, where string, v *netlink.Vlan) error {
		out = append(out, VLANLink{Netns: where, Name: v.Name, VLAN: v.VlanId, MAC: v.HardwareAddr})
		return nil
	})
	return out, err
}

// RemoveStaleVLAN deletes whatever link holds the VLAN ID on the parent, in any network namespace,
// and returns how many it deleted. The pool calls it before reusing a VLAN ID whose pod's DEL may not
// have run; Plug calls it itself when creating the VLAN fails with EEXIST.
func RemoveStaleVLAN(ctx context.Context, parent string, vlan int) (int, error) {
	host, err := openHostHandle()
	if err != nil {
		return 0, err
	}
	p, err := host.LinkByName(parent)
	host.Close()
	if err != nil {
		return 0, fmt.Errorf("parent link %s: %w", parent, err)
	}
	return removeVLANHolders(ctx, p, vlan, nil)
}

// removeVLANHolders deletes the links with this VLAN ID on this parent in every netns (kuryr's
// _cleanup_conflicting_vlan). With mac set, only a link with that MAC is deleted: Unplug uses it
// when the pod's netns path is gone, where the VLAN ID may already belong to another pod.
func removeVLANHolders(ctx context.Context, parent netlink.Link, vlan int, mac net.HardwareAddr) (int, error) {
	n := 0
	err := scanVLANs(ctx, parent.Attrs().Name, func(h netlinksafe.Handle, where string, v *netlink.Vlan) error {
		if v.VlanId != vlan || (mac != nil && !bytes.Equal(v.HardwareAddr, mac)) {
			return nil
		}
		if err := h.LinkDel(v); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete stale VLAN %d link %s on %s in netns %s: %w", vlan, v.Name, parent.Attrs().Name, where, err)
		}
		klog.FromContext(ctx).Info("Deleted a stale link holding a VLAN ID", "vlan", vlan, "link", v.Name, "parent", parent.Attrs().Name, "netns", where)
		n++
		return nil
	})
	return n, err
}

func openHostHandle() (netlinksafe.Handle, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return h, fmt.Errorf("open netlink handle in the node netns: %w", err)
	}
	return h, nil
}

// scanVLANs calls fn for every VLAN link whose parent is the named link of the caller's netns, in
// every reachable netns. A VLAN in another netns names its parent by ifindex plus IFLA_LINK_NETNSID,
// the id that netns gives ours; both must match, or a VLAN on an unrelated device that happens to
// have the same ifindex in its own netns would be taken for ours.
func scanVLANs(ctx context.Context, parentName string, fn func(h netlinksafe.Handle, where string, v *netlink.Vlan) error) error {
	self, err := os.Open(selfNetns)
	if err != nil {
		return fmt.Errorf("open own netns: %w", err)
	}
	defer self.Close()
	var selfSt unix.Stat_t
	if err := unix.Fstat(int(self.Fd()), &selfSt); err != nil {
		return fmt.Errorf("stat own netns: %w", err)
	}
	host, err := openHostHandle()
	if err != nil {
		return err
	}
	parent, err := host.LinkByName(parentName)
	host.Close()
	if err != nil {
		return fmt.Errorf("parent link %s: %w", parentName, err)
	}
	parentIdx := parent.Attrs().Index

	for _, where := range netnsPaths(ctx) {
		if err := ctx.Err(); err != nil {
			return err
		}
		isSelf := where.dev == selfSt.Dev && where.ino == selfSt.Ino
		if err := scanOne(where.path, isSelf, int(self.Fd()), parentIdx, fn); err != nil {
			return err
		}
	}
	return nil
}

func scanOne(path string, isSelf bool, selfFd, parentIdx int, fn func(netlinksafe.Handle, string, *netlink.Vlan) error) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // the netns went away during the scan
	}
	defer f.Close()
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(f.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return nil // not a netns we can enter (gone, or not a netns after all)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links in netns %s: %w", path, err)
	}
	selfID := -2 // looked up once, after the dump allocated ids for the parents it reported
	for _, l := range links {
		v, ok := l.(*netlink.Vlan)
		if !ok || v.ParentIndex != parentIdx {
			continue
		}
		if isSelf {
			if v.NetNsID != -1 {
				continue // parent in another netns
			}
		} else {
			if v.NetNsID < 0 {
				continue // parent in this same netns: not ours
			}
			if selfID == -2 {
				if selfID, err = h.GetNetNsIdByFd(selfFd); err != nil {
					selfID = -1
				}
			}
			if v.NetNsID != selfID {
				continue
			}
		}
		if err := fn(h, path, v); err != nil {
			return err
		}
	}
	return nil
}

type netnsRef struct {
	path     string
	dev, ino uint64
}

// netnsPaths lists every reachable netns once: the caller's own first, then the bind mounts, then
// those held only by processes, de-duplicated by (st_dev, st_ino) of the nsfs inode.
func netnsPaths(ctx context.Context) []netnsRef {
	var candidates []string
	candidates = append(candidates, selfNetns)
	for _, dir := range NetnsDirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			candidates = append(candidates, filepath.Join(dir, e.Name()))
		}
	}
	if procs, err := os.ReadDir("/proc"); err == nil {
		for _, e := range procs {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				candidates = append(candidates, filepath.Join("/proc", e.Name(), "ns", "net"))
			}
		}
	}
	seen := map[[2]uint64]bool{}
	var out []netnsRef
	for _, p := range candidates {
		if ns.IsNSorErr(p) != nil {
			continue // a leftover mount point, or a process that exited
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			continue
		}
		key := [2]uint64{st.Dev, st.Ino}
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, netnsRef{path: p, dev: st.Dev, ino: st.Ino})
	}
	klog.FromContext(ctx).V(4).Info("Scanning network namespaces", "count", len(out))
	return out
}
