package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
)

// Event reasons on Namespace objects.
const (
	ReasonNetworkReady   = "KuryrNetworkReady"
	ReasonNetworkFailed  = "KuryrNetworkFailed"
	ReasonNetworkDeleted = "KuryrNetworkDeleted"
	ReasonNetworkWaiting = "KuryrNetworkWaitingForPods"
)

// podsGoneRetry is how often a namespace network waiting for the namespace's pods to go is
// checked again (each pod deletion also retries it at once).
const podsGoneRetry = 10 * time.Second

// syncNamespace brings the namespace's KuryrNetwork and its Neutron resources to what the
// namespace needs: present with a network, subnet and router interface while the namespace
// lives, deleted (Neutron first, then the finalizer) once it is gone or terminating. It is
// level-triggered: it reads everything from the caches and Neutron, and repeats nothing done.
func (c *Controller) syncNamespace(ctx context.Context, name string) error {
	ns, err := c.nsLister.Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if apierrors.IsNotFound(err) {
		ns = nil
	}
	kn, err := c.knLister.Get(name, name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if apierrors.IsNotFound(err) {
		kn = nil
	}

	if c.selector != nil {
		switch {
		case ns != nil && !c.selector.Matches(labels.Set(ns.Labels)):
			return nil
		case ns == nil && (kn == nil || !c.selector.Matches(labels.Set(kn.Spec.NsLabels))):
			return nil
		}
	}
	// A KuryrNetwork of a namespace that is gone, terminating, excluded, or an earlier namespace
	// of the same name is deleted; its finalizer runs the Neutron cleanup.
	stale := kn != nil && ns != nil && ownerUID(kn) != "" && ownerUID(kn) != ns.UID
	if ns == nil || ns.DeletionTimestamp != nil || c.isExcluded(name) || stale {
		if kn == nil {
			return nil
		}
		if kn.DeletionTimestamp == nil {
			if c.isExcluded(name) && !kn.HasFinalizer() {
				return nil // not ours
			}
			klog.FromContext(ctx).V(2).Info("Deleting the KuryrNetwork of a namespace that is gone", "stale", stale)
			if err := c.kn.Delete(ctx, kn.Namespace, kn.Name, kn.UID); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return err
			}
			return nil // the informer brings the deletionTimestamp
		}
		return c.finalize(ctx, kn)
	}
	if kn != nil && kn.DeletionTimestamp != nil {
		return c.finalize(ctx, kn) // then it is created again for the living namespace
	}
	return c.ensure(ctx, ns, kn)
}

// nsRef is the namespace of a KuryrNetwork as an Event target; the namespace may be gone.
func nsRef(kn *kuryrnet.KuryrNetwork) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Namespace", Name: kn.Namespace, UID: ownerUID(kn)}
}

func ownerUID(kn *kuryrnet.KuryrNetwork) types.UID {
	for _, r := range kn.OwnerReferences {
		if r.Kind == "Namespace" && r.APIVersion == "v1" {
			return r.UID
		}
	}
	return ""
}

// ensure creates the KuryrNetwork with its finalizer, then the network, subnet and router
// interface, recording each in the status as soon as it exists.
func (c *Controller) ensure(ctx context.Context, ns *corev1.Namespace, kn *kuryrnet.KuryrNetwork) error {
	logger := klog.FromContext(ctx)
	start := time.Now()
	if kn == nil {
		k := kuryrnet.New(ns.Name, c.project, ns.Labels)
		k.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Namespace", Name: ns.Name, UID: ns.UID}}
		created, err := c.kn.Create(ctx, k)
		if apierrors.IsAlreadyExists(err) {
			return nil // the informer has not shown it yet: it brings it back here
		}
		if err != nil {
			return err
		}
		logger.V(2).Info("KuryrNetwork created", "kuryrnetwork", klog.KObj(created))
		kn = created
	}
	if !kn.HasFinalizer() || !maps.Equal(kn.Spec.NsLabels, ns.Labels) {
		k := kn.DeepCopy()
		if !k.HasFinalizer() {
			k.Finalizers = append(k.Finalizers, kuryrnet.Finalizer) // before any Neutron resource
		}
		k.Spec.NsLabels = maps.Clone(ns.Labels)
		updated, err := c.kn.Update(ctx, k)
		if err != nil {
			return err
		}
		kn = updated
	}
	// The cache may not show our last status write yet: what this process wrote moments ago
	// counts, so a sync right after a write repeats no Neutron call.
	cur := kn.Status
	if w, ok := c.recentStatus(kn); ok && covers(w, cur) {
		cur = w
	}
	st := cur
	if st.NetID != "" && st.SubnetID != "" && st.RouterID == c.cfg.NamespaceSubnet.PodRouter &&
		st.Populated == c.cfg.Kubernetes.PopulationEnabled() && maps.Equal(st.NsLabels, ns.Labels) {
		return nil // steady state: no Neutron call
	}
	write := func() error {
		if statusEqual(st, cur) {
			return nil
		}
		k := kn.DeepCopy()
		k.Status = st
		out, err := c.kn.UpdateStatus(ctx, k)
		if err != nil {
			return err
		}
		kn, cur = out, st
		c.rememberStatus(kn, st)
		return nil
	}

	uid := string(ns.UID)
	newSubnet := st.SubnetID == ""
	if st.NetID == "" {
		net, err := c.ensureNetwork(ctx, ns.Name, uid)
		if err != nil {
			c.recorder.Eventf(ns, corev1.EventTypeWarning, ReasonNetworkFailed, "Creating the Neutron network failed: %v", err)
			return err
		}
		st.NetID = net
		if err := write(); err != nil {
			return err // the network is found again by name and description
		}
	}
	if st.SubnetID == "" {
		s, err := c.ensureSubnet(ctx, ns.Name, uid, st.NetID)
		if err != nil {
			c.recorder.Eventf(ns, corev1.EventTypeWarning, ReasonNetworkFailed, "Creating the Neutron subnet failed: %v", err)
			return err
		}
		st.SubnetID, st.SubnetCIDR = s.ID, s.CIDR
	}
	if router := c.cfg.NamespaceSubnet.PodRouter; router != "" && st.RouterID != router {
		if _, err := c.nc.AddRouterInterface(ctx, router, st.SubnetID); err != nil {
			c.recorder.Eventf(ns, corev1.EventTypeWarning, ReasonNetworkFailed, "Attaching subnet %s to router %s failed: %v", st.SubnetID, router, err)
			return errors.Join(err, write())
		}
		st.RouterID = router
	}
	st.NsLabels = maps.Clone(ns.Labels)
	st.Populated = c.cfg.Kubernetes.PopulationEnabled()
	if err := write(); err != nil {
		return err
	}
	if newSubnet {
		c.metrics.setup.Observe(time.Since(start).Seconds())
		c.recorder.Eventf(ns, corev1.EventTypeNormal, ReasonNetworkReady, "Neutron network %s, subnet %s (%s) ready%s",
			st.NetID, st.SubnetID, st.SubnetCIDR, map[bool]string{true: "; agents pre-populate their pools", false: ""}[st.Populated])
	}
	logger.Info("Namespace network ready", "network", st.NetID, "subnet", st.SubnetID, "cidr", st.SubnetCIDR,
		"router", st.RouterID, "populated", st.Populated)
	return nil
}

// statusMemory is how long a status this process wrote is trusted over an informer cache that
// does not show it yet.
const statusMemory = 30 * time.Second

type writtenStatus struct {
	st kuryrnet.Status
	at time.Time
}

func writtenKey(kn *kuryrnet.KuryrNetwork) string { return kn.Namespace + "/" + string(kn.UID) }

func (c *Controller) rememberStatus(kn *kuryrnet.KuryrNetwork, st kuryrnet.Status) {
	c.written.Store(writtenKey(kn), writtenStatus{st: st, at: time.Now()})
}

func (c *Controller) recentStatus(kn *kuryrnet.KuryrNetwork) (kuryrnet.Status, bool) {
	v, ok := c.written.Load(writtenKey(kn))
	if !ok {
		return kuryrnet.Status{}, false
	}
	w := v.(writtenStatus)
	if time.Since(w.at) > statusMemory {
		c.written.Delete(writtenKey(kn))
		return kuryrnet.Status{}, false
	}
	return w.st, true
}

// covers reports whether newer extends older: every ID older records is the same in newer (the
// cache is behind our write, not changed by someone else).
func covers(newer, older kuryrnet.Status) bool {
	same := func(n, o string) bool { return o == "" || o == n }
	return same(newer.NetID, older.NetID) && same(newer.SubnetID, older.SubnetID) &&
		same(newer.SubnetCIDR, older.SubnetCIDR) && same(newer.RouterID, older.RouterID)
}

func statusEqual(a, b kuryrnet.Status) bool {
	return a.NetID == b.NetID && a.SubnetID == b.SubnetID && a.SubnetCIDR == b.SubnetCIDR && a.RouterID == b.RouterID &&
		a.Populated == b.Populated && maps.Equal(a.NsLabels, b.NsLabels)
}

// tags are what every Neutron resource of this cluster carries: the cluster tag and resource_tags.
func (c *Controller) tags() []string {
	t := []string{c.clusterTag}
	for _, x := range c.cfg.NeutronDefaults.ResourceTags {
		if !slices.Contains(t, x) {
			t = append(t, x)
		}
	}
	return t
}

// ensureNetwork finds the namespace's network by name and description (the namespace UID), as
// kuryr does, or creates it; then makes sure it is tagged.
func (c *Controller) ensureNetwork(ctx context.Context, name, uid string) (string, error) {
	found, err := c.nc.ListNetworks(ctx, neutron.NetworkFilter{Name: name, Description: uid, ProjectID: c.project})
	if err != nil {
		return "", err
	}
	var net neutron.ListedNetwork
	if len(found) > 0 {
		net = found[0]
		klog.FromContext(ctx).V(2).Info("Using the existing network of the namespace", "network", net.ID)
	} else {
		if net, err = c.nc.CreateNetwork(ctx, neutron.NetworkSpec{Name: name, Description: uid, ProjectID: c.project}); err != nil {
			return "", err
		}
		c.metrics.neutronCreated.WithLabelValues("network").Inc()
	}
	if want := c.tags(); !hasAll(net.Tags, want) {
		if err := c.nc.SetNetworkTags(ctx, net.ID, union(net.Tags, want)); err != nil {
			return "", err
		}
	}
	return net.ID, nil
}

// ensureSubnet finds the network's subnet (kuryr keeps one per namespace network) or allocates
// one from [namespace_subnet] pod_subnet_pool; then makes sure it is tagged.
func (c *Controller) ensureSubnet(ctx context.Context, name, uid, netID string) (neutron.ListedSubnet, error) {
	found, err := c.nc.ListSubnets(ctx, neutron.SubnetFilter{NetworkID: netID})
	if err != nil {
		return neutron.ListedSubnet{}, err
	}
	var s neutron.ListedSubnet
	if len(found) > 0 {
		s = found[0]
	} else {
		sp, err := c.subnetPool(ctx)
		if err != nil {
			return neutron.ListedSubnet{}, err
		}
		s, err = c.nc.CreateSubnet(ctx, neutron.SubnetSpec{Name: name, Description: uid, NetworkID: netID, ProjectID: c.project,
			SubnetPoolID: sp.ID, IPVersion: sp.IPVersion})
		if err != nil {
			return neutron.ListedSubnet{}, fmt.Errorf("[namespace_subnet] pod_subnet_pool %s: %w", sp.ID, err)
		}
		c.metrics.neutronCreated.WithLabelValues("subnet").Inc()
	}
	if want := c.tags(); !hasAll(s.Tags, want) {
		if err := c.nc.SetSubnetTags(ctx, s.ID, union(s.Tags, want)); err != nil {
			return neutron.ListedSubnet{}, err
		}
	}
	return s, nil
}

// subnetPool reads [namespace_subnet] pod_subnet_pool once (its IP version picks the subnets').
func (c *Controller) subnetPool(ctx context.Context) (neutron.SubnetPool, error) {
	if sp := c.poolInfo.Load(); sp != nil {
		return *sp, nil
	}
	id := c.cfg.NamespaceSubnet.PodSubnetPool
	sp, err := c.nc.GetSubnetPool(ctx, id)
	if err != nil {
		return neutron.SubnetPool{}, fmt.Errorf("[namespace_subnet] pod_subnet_pool %s: %w", id, err)
	}
	c.poolInfo.Store(&sp)
	return sp, nil
}

// finalize deletes the namespace's router interface, ports, subnet and network, then removes the
// finalizer. Ports are deleted only when no pod of the namespace is left: a port in use is never
// pulled from under a pod.
func (c *Controller) finalize(ctx context.Context, kn *kuryrnet.KuryrNetwork) error {
	if !kn.HasFinalizer() {
		return nil
	}
	logger := klog.FromContext(ctx)
	start := time.Now()
	pods, err := c.podLister.Pods(kn.Namespace).List(labels.Everything())
	if err != nil {
		return err
	}
	pods = slices.DeleteFunc(pods, func(p *corev1.Pod) bool { return p.Spec.HostNetwork })
	if len(pods) == 0 {
		// The cache may not have seen a pod created a moment ago: ask the API server before
		// deleting a network that a pod could be using.
		live, err := c.kube.CoreV1().Pods(kn.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list the pods of namespace %s: %w", kn.Namespace, err)
		}
		for i := range live.Items {
			if !live.Items[i].Spec.HostNetwork {
				pods = append(pods, &live.Items[i])
			}
		}
	}
	if len(pods) > 0 {
		c.recorder.Eventf(nsRef(kn), corev1.EventTypeNormal, ReasonNetworkWaiting, "Waiting for %d pods to go before deleting the Neutron network", len(pods))
		return &retryAfter{after: podsGoneRetry, reason: fmt.Sprintf("%d pods left in the namespace", len(pods))}
	}

	netID := kn.Status.NetID
	if netID == "" {
		if uid := ownerUID(kn); uid != "" {
			found, err := c.nc.ListNetworks(ctx, neutron.NetworkFilter{Name: kn.Spec.NsName, Description: string(uid)})
			if err != nil {
				return err
			}
			if len(found) > 0 {
				netID = found[0].ID
			}
		}
	}
	if netID != "" {
		if err := c.deleteNetwork(ctx, kn, netID); err != nil {
			c.recorder.Eventf(nsRef(kn), corev1.EventTypeWarning, ReasonNetworkFailed, "Deleting Neutron network %s failed: %v", netID, err)
			return err
		}
	}
	k := kn.DeepCopy()
	k.Finalizers = slices.DeleteFunc(k.Finalizers, func(f string) bool { return f == kuryrnet.Finalizer })
	if _, err := c.kn.Update(ctx, k); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	c.metrics.teardown.Observe(time.Since(start).Seconds())
	c.recorder.Eventf(nsRef(kn), corev1.EventTypeNormal, ReasonNetworkDeleted, "Neutron network %s and subnet %s deleted", netID, kn.Status.SubnetID)
	c.written.Delete(writtenKey(kn))
	logger.Info("Namespace network deleted", "network", netID, "subnet", kn.Status.SubnetID)
	return nil
}

// deleteNetwork removes what kuryr's namespace driver created on the network: router interfaces,
// the pool ports (subports detached first), then the network with its subnets.
func (c *Controller) deleteNetwork(ctx context.Context, kn *kuryrnet.KuryrNetwork, netID string) error {
	subnets, err := c.nc.ListSubnets(ctx, neutron.SubnetFilter{NetworkID: netID})
	if err != nil {
		return err
	}
	router := kn.Status.RouterID
	if router == "" {
		router = c.cfg.NamespaceSubnet.PodRouter
	}
	if router != "" {
		for _, s := range subnets {
			if err := c.nc.RemoveRouterInterface(ctx, router, s.ID); err != nil {
				return err
			}
		}
	}
	ports, err := c.nc.ListPorts(ctx, neutron.PortFilter{NetworkID: netID})
	if err != nil {
		return err
	}
	var ids []string
	for _, p := range ports {
		switch p.DeviceOwner {
		case pool.DeviceOwnerKuryr, pool.DeviceOwnerSubport, "":
			ids = append(ids, p.ID)
		}
	}
	if len(ids) > 0 {
		if err := c.detach(ctx, ids); err != nil {
			return err
		}
		if failed := c.nc.DeletePorts(ctx, ids); len(failed) > 0 {
			errs := make([]error, 0, len(failed))
			for _, e := range failed {
				errs = append(errs, e)
			}
			return fmt.Errorf("delete %d of the %d ports of network %s: %w", len(failed), len(ids), netID, errors.Join(errs...))
		}
		klog.FromContext(ctx).V(2).Info("Ports of the namespace network deleted", "network", netID, "ports", len(ids))
	}
	if err := c.nc.DeleteNetwork(ctx, netID); err != nil {
		return err // e.g. 409: a port appeared meanwhile; the retry lists them again
	}
	c.metrics.neutronDeleted.WithLabelValues("network").Inc()
	return nil
}

// detach removes the ports that are subports from their trunks: one remove_subports per trunk,
// port by port when Neutron refuses the batch.
func (c *Controller) detach(ctx context.Context, ids []string) error {
	trunks, err := c.nc.ListTrunks(ctx, neutron.TrunkFilter{})
	if err != nil {
		return err
	}
	of := neutron.SubportTrunks(trunks)
	byTrunk := map[string][]string{}
	for _, id := range ids {
		if t, ok := of[id]; ok {
			byTrunk[t] = append(byTrunk[t], id)
		}
	}
	for t, subs := range byTrunk {
		if err := c.nc.RemoveSubports(ctx, t, subs); err == nil {
			continue
		}
		for _, id := range subs {
			if err := c.nc.RemoveSubports(ctx, t, []string{id}); err != nil {
				return err
			}
		}
	}
	return nil
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}
