package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/cni"
	"github.com/kuryr-pools/kuryr/internal/crashpoint"
	"github.com/kuryr-pools/kuryr/netns"
	"github.com/kuryr-pools/kuryr/pool"
)

// Pools is what the agent needs from the node's pool driver (*pool.Driver).
type Pools interface {
	Acquire(ctx context.Context, req pool.AcquireRequest) (pool.Port, error)
	Abort(portID string) error
	Release(owner string) (pool.Port, error)
	MarkInUse(p pool.Port, name, deviceID string)
}

// Plugger does the kernel work (package netns).
type Plugger interface {
	Plug(ctx context.Context, a *Attachment) error
	Unplug(ctx context.Context, a *Attachment) error
	// UnplugIfName removes ifName from the netns when nothing else is known about it.
	UnplugIfName(ctx context.Context, netnsPath, ifName string) error
	Check(ctx context.Context, a *Attachment) error
}

// PodNetwork is where a pod's port comes from and how it is addressed.
type PodNetwork struct {
	Project   string
	NetworkID string
	SubnetIDs []string
	SGs       pool.SGSet
	Subnet    SubnetInfo // of SubnetIDs[0]
}

// SubnetInfo is what plugging needs to know of a Neutron subnet and its network.
type SubnetInfo struct {
	ID        string
	NetworkID string
	CIDR      string
	GatewayIP string
	MTU       int
	Routes    []Route
}

// NetworkResolver tells which network, subnet and security groups a pod's port needs. It is on the
// ADD path, so it must answer from caches.
type NetworkResolver interface {
	Resolve(ctx context.Context, pod PodRef) (PodNetwork, error)
}

// Notifier tells Kubernetes what happened to a pod, asynchronously; it never blocks the caller.
type Notifier interface {
	// Event records a Kubernetes Event on the pod.
	Event(pod PodRef, eventType, reason, message string)
	// Attached records the port on the pod (annotation).
	Attached(pod PodRef, a *Attachment)
}

// Binding says how ports are plugged on this node.
type Binding struct {
	// Nested is true for VLAN subports of the node's trunk (pod_vif_driver nested-vlan).
	Nested bool
	// Parent is the trunk parent link for VLANs ([binding] link_iface or detected).
	Parent string
	// DefaultVIFType plugs bare-metal ports whose binding Neutron does not report: "ovs" or "bridge".
	DefaultVIFType string
	// OVSBridge is used when the port's binding details name no bridge.
	OVSBridge string
	// LinuxBridge is the bridge for the "bridge" VIF type.
	LinuxBridge string
	// NetworkDeviceMTU, when non-zero, lowers the MTU of veth plugs ([neutron_defaults]).
	NetworkDeviceMTU int
}

// Service answers the CNI requests of one node.
type Service struct {
	Node       string
	Pools      Pools
	Networks   NetworkResolver
	Plugger    Plugger
	Checkpoint *Checkpoint
	Binding    Binding
	Notifier   Notifier
	// Pods completes pod references from the node's pod cache (nil when standalone).
	Pods interface{ Complete(PodRef) PodRef }
	// PoolWait bounds how long ADD waits for a refill when the pool is empty.
	PoolWait time.Duration
	Now      func() time.Time

	ready atomic.Bool
	locks keyedMutex
}

// SetReady opens the service once the pools are loaded.
func (s *Service) SetReady(ready bool) { s.ready.Store(ready) }

// Ready reports whether the pools are loaded.
func (s *Service) Ready() bool { return s.ready.Load() }

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func cniError(code uint, msg string, err error) *types.Error {
	details := ""
	if err != nil {
		details = err.Error()
	}
	return types.NewError(code, msg, details)
}

// parsed is a validated CNI request.
type parsed struct {
	req  *cni.Request
	conf *cni.NetConf
	pod  PodRef
}

func (s *Service) parse(req *cni.Request, needNetns bool) (*parsed, error) {
	if req.ContainerID == "" {
		return nil, cniError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is empty", nil)
	}
	// The socket may serve more than kuryr-cni (socket_group): check what skel checks for it. A '/'
	// in either would also let two attachments share one checkpoint key, and so one port.
	if err := utils.ValidateContainerID(req.ContainerID); err != nil {
		return nil, cniError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_CONTAINERID %q is not a valid container ID", req.ContainerID), err)
	}
	if err := utils.ValidateInterfaceName(req.IfName); err != nil {
		return nil, cniError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q is not a valid interface name", req.IfName), err)
	}
	if needNetns {
		if req.Netns == "" {
			return nil, cniError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", nil)
		}
		if _, err := os.Stat(req.Netns); err != nil {
			return nil, cniError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q is not a network namespace", req.Netns), err)
		}
	}
	conf, err := cni.LoadNetConf(req.Config)
	if err != nil {
		return nil, cniError(types.ErrDecodingFailure, "invalid network configuration", err)
	}
	ref, err := cni.ParseK8sArgs(req.Args)
	if err != nil {
		return nil, cniError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", err)
	}
	pod := PodRef{Namespace: ref.Namespace, Name: ref.Name, UID: ref.UID}
	if pod.Namespace == "" {
		pod.Namespace = "default"
	}
	if pod.Name == "" {
		pod.Name = req.ContainerID // outside Kubernetes (cnitool, the demo) the container names the pod
	}
	if s.Pods != nil {
		pod = s.Pods.Complete(pod)
	}
	return &parsed{req: req, conf: conf, pod: pod}, nil
}

func (s *Service) logger(ctx context.Context, p *parsed, verb string) klog.Logger {
	// klog.KRef: "ns/name" in text logs, {"name", "namespace"} in JSON ones.
	return klog.FromContext(ctx).WithValues("cmd", verb, "pod", klog.KRef(p.pod.Namespace, p.pod.Name), "containerID", p.req.ContainerID, "ifname", p.req.IfName)
}

// Add gives the pod a port from the local pool and plugs it into its netns.
func (s *Service) Add(ctx context.Context, req *cni.Request) (_ *current.Result, err error) {
	if !s.Ready() {
		return nil, cniError(types.ErrTryAgainLater, "kuryr agent is starting: pools not loaded yet", nil)
	}
	p, err := s.parse(req, true)
	if err != nil {
		return nil, err
	}
	log := s.logger(ctx, p, "ADD")
	ctx = klog.NewContext(ctx, log)
	defer func() {
		if err != nil {
			log.Error(err, "ADD failed")
		}
	}()
	unlock := s.locks.lock(req.ContainerID)
	defer unlock()

	if a, ok := s.Checkpoint.Get(req.ContainerID, req.IfName); ok {
		return s.readd(ctx, a, p)
	}
	netw, err := s.Networks.Resolve(ctx, p.pod)
	if err != nil {
		return nil, cniError(types.ErrInternal, "cannot tell the pod's network", err)
	}
	a := &Attachment{ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns, Pod: p.pod, Network: p.conf.Name, CreatedAt: s.now()}
	key := pool.Key{Node: s.Node, Project: netw.Project, Network: netw.NetworkID}
	waitCtx, cancel := context.WithTimeout(ctx, s.PoolWait)
	port, err := s.Pools.Acquire(waitCtx, pool.AcquireRequest{
		Key: key, SubnetIDs: netw.SubnetIDs, SGs: netw.SGs, Owner: a.Owner(),
		OnWait: func(reason string) {
			log.Info("pool empty, waiting for a refill", "pool", key.String(), "reason", reason)
			s.notify().Event(p.pod, "Warning", "WaitingForPort", fmt.Sprintf("pool %s is empty, waiting up to %s: %s", key, s.PoolWait, reason))
		},
	})
	cancel()
	if err != nil {
		if errors.Is(err, pool.ErrPoolEmpty) {
			s.notify().Event(p.pod, "Warning", "PoolExhausted", err.Error())
			return nil, cniError(types.ErrTryAgainLater, "no port available yet, try again later", err)
		}
		return nil, cniError(types.ErrInternal, "cannot get a port", err)
	}
	a.Port = port
	crashpoint.Hit("add-acquired")
	if a.Plug, err = s.plugParams(port, netw.Subnet); err != nil {
		s.abort(ctx, port)
		return nil, cniError(types.ErrInternal, "cannot plug the port", err)
	}
	// Persist before touching the kernel: after a crash the checkpoint knows every port that may
	// be plugged somewhere, so none is handed out twice.
	if err := s.Checkpoint.Put(a); err != nil {
		s.abort(ctx, port)
		return nil, cniError(types.ErrIOFailure, "cannot write the checkpoint", err)
	}
	crashpoint.Hit("add-checkpointed")
	if err := s.Plugger.Plug(ctx, a); err != nil {
		if uerr := s.Plugger.Unplug(ctx, a); uerr != nil {
			log.Error(uerr, "rollback of a failed plug")
		}
		if derr := s.Checkpoint.Drop(req.ContainerID, req.IfName); derr != nil {
			// The entry stays: the port is not reused until a DEL or GC releases it.
			log.Error(derr, "rollback: checkpoint")
		} else {
			s.abort(ctx, port)
		}
		return nil, cniError(types.ErrInternal, "cannot plug the port into the pod", err)
	}
	crashpoint.Hit("add-plugged")
	s.Pools.MarkInUse(port, p.pod.String(), p.pod.UID)
	s.notify().Attached(p.pod, a)
	log.V(2).Info("port attached", "port", port.ID, "mac", port.MAC, "ips", port.FixedIPs, "vlan", port.VLAN)
	return resultOf(a)
}

// readd answers an ADD for an attachment that exists already (a retried ADD): it re-plugs when the
// interface is gone and returns the same result.
func (s *Service) readd(ctx context.Context, a *Attachment, p *parsed) (*current.Result, error) {
	if a.Netns != p.req.Netns {
		// The runtime's mistake, not ours: the first attachment stands until its DEL.
		return nil, cniError(types.ErrInvalidNetNS, fmt.Sprintf("container %s/%s is already attached in netns %s, not %s: DEL it first",
			a.ContainerID, a.IfName, a.Netns, p.req.Netns), nil)
	}
	if err := s.Plugger.Check(ctx, a); err != nil {
		_ = s.Plugger.Unplug(ctx, a)
		if perr := s.Plugger.Plug(ctx, a); perr != nil {
			return nil, cniError(types.ErrInternal, "cannot re-plug the port into the pod", perr)
		}
	}
	return resultOf(a)
}

func (s *Service) abort(ctx context.Context, port pool.Port) {
	if err := s.Pools.Abort(port.ID); err != nil {
		klog.FromContext(ctx).Error(err, "give the port back to the pool", "port", port.ID)
	}
}

func (s *Service) notify() Notifier {
	if s.Notifier == nil {
		return nopNotifier{}
	}
	return s.Notifier
}

type nopNotifier struct{}

func (nopNotifier) Event(PodRef, string, string, string) {}
func (nopNotifier) Attached(PodRef, *Attachment)         {}

// Del unplugs the pod's interface and gives its port back to the pool. It is idempotent.
func (s *Service) Del(ctx context.Context, req *cni.Request) (err error) {
	p, err := s.parse(req, false)
	if err != nil {
		return err
	}
	log := s.logger(ctx, p, "DEL")
	ctx = klog.NewContext(ctx, log)
	defer func() {
		if err != nil {
			log.Error(err, "DEL failed")
		}
	}()
	unlock := s.locks.lock(req.ContainerID)
	defer unlock()
	a, ok := s.Checkpoint.Get(req.ContainerID, req.IfName)
	if !ok {
		if req.Netns != "" {
			if err := s.Plugger.UnplugIfName(ctx, req.Netns, req.IfName); err != nil {
				return cniError(types.ErrInternal, "cannot remove the interface", err)
			}
		}
		log.V(2).Info("nothing attached; done")
		return nil
	}
	return s.release(ctx, a)
}

func (s *Service) release(ctx context.Context, a *Attachment) error {
	log := klog.FromContext(ctx)
	if err := s.Plugger.Unplug(ctx, a); err != nil {
		return cniError(types.ErrInternal, "cannot unplug the port", err)
	}
	crashpoint.Hit("del-unplugged")
	if err := s.Checkpoint.Release(a.ContainerID, a.IfName, s.now()); err != nil {
		return cniError(types.ErrIOFailure, "cannot write the checkpoint", err)
	}
	crashpoint.Hit("del-checkpointed")
	if _, err := s.Pools.Release(a.Owner()); err != nil {
		log.Error(err, "release the port to the pool", "port", a.Port.ID)
	}
	crashpoint.Hit("del-released")
	log.V(2).Info("port released", "port", a.Port.ID)
	return nil
}

// Check verifies that the pod's interface is as the agent plugged it.
func (s *Service) Check(ctx context.Context, req *cni.Request) error {
	p, err := s.parse(req, true)
	if err != nil {
		return err
	}
	a, ok := s.Checkpoint.Get(req.ContainerID, req.IfName)
	if !ok {
		return cniError(types.ErrUnknownContainer, fmt.Sprintf("no attachment for container %s interface %s", req.ContainerID, req.IfName), nil)
	}
	if err := s.Plugger.Check(klog.NewContext(ctx, s.logger(ctx, p, "CHECK")), a); err != nil {
		return cniError(types.ErrInternal, "interface is not as plugged", err)
	}
	return nil
}

// GC releases the attachments of this network that the runtime no longer lists as valid.
func (s *Service) GC(ctx context.Context, req *cni.Request) error {
	conf, err := cni.LoadNetConf(req.Config)
	if err != nil {
		return cniError(types.ErrDecodingFailure, "invalid network configuration", err)
	}
	valid := map[types.GCAttachment]bool{}
	for _, v := range conf.ValidAttachments {
		valid[v] = true
	}
	log := klog.FromContext(ctx).WithValues("cmd", "GC", "network", conf.Name)
	var errs []error
	for _, a := range s.Checkpoint.Attachments() {
		if a.Network != conf.Name || valid[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName}] {
			continue
		}
		unlock := s.locks.lock(a.ContainerID)
		if cur, ok := s.Checkpoint.Get(a.ContainerID, a.IfName); ok {
			log.Info("releasing an attachment the runtime no longer knows", "containerID", a.ContainerID, "ifname", a.IfName, "pod", a.Pod.String(), "port", a.Port.ID)
			if err := s.release(klog.NewContext(ctx, log), cur); err != nil {
				errs = append(errs, err)
			}
		}
		unlock()
	}
	if len(errs) > 0 {
		return cniError(types.ErrInternal, "GC could not release every stale attachment", errors.Join(errs...))
	}
	return nil
}

// Status is ready once the pools are loaded.
func (s *Service) Status(context.Context) error {
	if !s.Ready() {
		return cniError(types.ErrPluginNotAvailable, "kuryr agent is starting: pools not loaded yet", nil)
	}
	return nil
}

// plugParams decides how the port is plugged: a VLAN on the trunk parent (nested), or a veth on OVS
// or a Linux bridge (bare metal) as Neutron's binding says, falling back to configuration when
// Neutron reports no binding (no L2 agent).
func (s *Service) plugParams(port pool.Port, sub SubnetInfo) (PlugParams, error) {
	_, cidr, err := net.ParseCIDR(sub.CIDR)
	if err != nil {
		return PlugParams{}, fmt.Errorf("subnet %s has an invalid CIDR %q: %w", sub.ID, sub.CIDR, err)
	}
	prefix, _ := cidr.Mask.Size()
	pp := PlugParams{MAC: port.MAC, MTU: sub.MTU, Gateway: sub.GatewayIP, Routes: sub.Routes}
	for _, ip := range port.FixedIPs {
		if ip.SubnetID != "" && ip.SubnetID != sub.ID {
			continue
		}
		pp.Addresses = append(pp.Addresses, fmt.Sprintf("%s/%d", ip.IP, prefix))
	}
	if len(pp.Addresses) == 0 {
		return PlugParams{}, fmt.Errorf("port %s has no address on subnet %s", port.ID, sub.ID)
	}
	if s.Binding.Nested {
		if port.VLAN <= 0 {
			return PlugParams{}, fmt.Errorf("port %s has no VLAN ID on the trunk", port.ID)
		}
		pp.Mode, pp.VLAN, pp.Parent = "vlan", port.VLAN, s.Binding.Parent
		return pp, nil
	}
	if s.Binding.NetworkDeviceMTU > 0 && (pp.MTU == 0 || s.Binding.NetworkDeviceMTU < pp.MTU) {
		pp.MTU = s.Binding.NetworkDeviceMTU
	}
	pp.Mode = s.Binding.DefaultVIFType
	switch port.VIFType {
	case "ovs":
		pp.Mode = "ovs"
	case "bridge":
		pp.Mode = "bridge"
	}
	pp.HostIfName = netns.HostIfName(port.ID)
	switch pp.Mode {
	case "ovs":
		pp.Bridge = s.Binding.OVSBridge
		if b := port.VIFDetails.BridgeName; b != "" {
			pp.Bridge = b
		}
		if pp.Bridge == "" {
			pp.Bridge = "br-int"
		}
	case "bridge":
		pp.Bridge = s.Binding.LinuxBridge
	default:
		return PlugParams{}, fmt.Errorf("unknown VIF type %q for port %s", pp.Mode, port.ID)
	}
	return pp, nil
}

// resultOf builds the CNI result of an attachment.
func resultOf(a *Attachment) (*current.Result, error) {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	res.Interfaces = []*current.Interface{{Name: a.IfName, Mac: a.Plug.MAC, Sandbox: a.Netns, Mtu: a.Plug.MTU}}
	var gw net.IP
	if a.Plug.Gateway != "" {
		gw = net.ParseIP(a.Plug.Gateway)
	}
	for _, addr := range a.Plug.Addresses {
		ip, ipnet, err := net.ParseCIDR(addr)
		if err != nil {
			return nil, cniError(types.ErrInternal, "invalid address in the checkpoint", err)
		}
		ipc := &current.IPConfig{Interface: current.Int(0), Address: net.IPNet{IP: ip, Mask: ipnet.Mask}}
		if gw != nil && ipnet.Contains(gw) {
			ipc.Gateway = gw
		}
		res.IPs = append(res.IPs, ipc)
	}
	if gw != nil {
		dst := "0.0.0.0/0"
		if gw.To4() == nil {
			dst = "::/0"
		}
		_, def, _ := net.ParseCIDR(dst)
		res.Routes = append(res.Routes, &types.Route{Dst: *def, GW: gw})
	}
	for _, r := range a.Plug.Routes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			continue
		}
		res.Routes = append(res.Routes, &types.Route{Dst: *dst, GW: net.ParseIP(r.GW)})
	}
	return res, nil
}

// keyedMutex serialises the requests of one container (ADD and DEL may race on retries).
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*refMutex{}
	}
	m := k.locks[key]
	if m == nil {
		m = &refMutex{}
		k.locks[key] = m
	}
	m.refs++
	k.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		if m.refs--; m.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
