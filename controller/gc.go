package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/pager"
	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
)

// PortAnnotation is the pod annotation in which kuryr-agent records the pod's port
// (agent.PortAnnotation): {"portId": ...}. A port named there is in use.
const PortAnnotation = "kuryr.openstack.org/port"

// Reason says why the GC considers a port garbage.
type Reason string

// Reasons, also the "reason" label of the GC metrics.
const (
	// ReasonNodeGone: the port is tagged for a node that does not exist.
	ReasonNodeGone Reason = "node-gone"
	// ReasonPodGone: the port was marked in use by a pod (name "<namespace>/<pod>", device_id its
	// UID) and no such pod exists.
	ReasonPodGone Reason = "pod-gone"
)

// gcDeleteConcurrency is how many ports the GC deletes at once (kuryr's LEFTOVER_RM_POOL_SIZE).
const gcDeleteConcurrency = 5

// Event reasons of the GC.
const (
	ReasonNodePortsDeleted = "KuryrNodePortsDeleted"
	ReasonLeakedPortDelete = "KuryrLeakedPortDeleted"
	ReasonPortGCFailed     = "KuryrPortGCFailed"
)

// Live is the cluster state ports are judged against.
type Live struct {
	Nodes    map[string]bool // node names
	PodUIDs  map[string]bool
	PodNames map[string]bool // "<namespace>/<name>"
	PodPorts map[string]bool // port IDs named by pods' PortAnnotation
}

// NewLive indexes nodes and pods.
func NewLive(nodes []*corev1.Node, pods []*corev1.Pod) Live {
	l := Live{Nodes: map[string]bool{}, PodUIDs: map[string]bool{}, PodNames: map[string]bool{}, PodPorts: map[string]bool{}}
	for _, n := range nodes {
		l.Nodes[n.Name] = true
	}
	for _, p := range pods {
		l.PodUIDs[string(p.UID)] = true
		l.PodNames[p.Namespace+"/"+p.Name] = true
		if id := annotatedPort(p); id != "" {
			l.PodPorts[id] = true
		}
	}
	return l
}

// annotatedPort is the portId of a pod's PortAnnotation, read without a JSON decoder: the GC
// reads every pod of the cluster.
func annotatedPort(p *corev1.Pod) string {
	v := p.Annotations[PortAnnotation]
	const key = `"portId":"`
	i := strings.Index(v, key)
	if i < 0 {
		return ""
	}
	rest := v[i+len(key):]
	if j := strings.IndexByte(rest, '"'); j > 0 {
		return rest[:j]
	}
	return ""
}

// Orphan decides whether a port tagged for this cluster is garbage, and why; "" keeps it.
//   - Only kuryr's pod ports are judged (device_owner compute:kuryr, trunk:subport, or empty: a
//     subport Neutron detached).
//   - A port a live pod uses (by device_id = pod UID, by name "<namespace>/<pod>", or by the
//     agent's pod annotation) is always kept, whatever else is true.
//   - A port tagged for a node that does not exist is garbage (node-gone).
//   - On a live node, a pool port (available-port) belongs to the agent and is kept; a port marked
//     in use by a pod (name "<namespace>/<pod>" and a device_id) with no such pod is garbage
//     (pod-gone). Anything else is kept.
func Orphan(p neutron.Port, live Live) Reason {
	switch p.DeviceOwner {
	case pool.DeviceOwnerKuryr, pool.DeviceOwnerSubport, "":
	default:
		return ""
	}
	if live.PodPorts[p.ID] || (p.DeviceID != "" && live.PodUIDs[p.DeviceID]) || live.PodNames[p.Name] {
		return ""
	}
	if node := nodeOf(p); node != "" && !live.Nodes[node] {
		return ReasonNodeGone
	}
	if p.Name == pool.AvailablePortName || p.DeviceID == "" {
		return ""
	}
	if ns, pod, ok := strings.Cut(p.Name, "/"); ok && ns != "" && pod != "" && !strings.Contains(pod, "/") {
		return ReasonPodGone
	}
	return ""
}

// nodeOf is the node a port is tagged for ("" when untagged).
func nodeOf(p neutron.Port) string {
	for _, t := range p.Tags {
		if n, ok := strings.CutPrefix(t, neutron.NodeTagPrefix); ok {
			return n
		}
	}
	return ""
}

// gc marks orphaned ports on one pass and deletes them on a later pass, once they have been
// orphaned for the grace period and are still orphaned against nodes and pods listed from the API
// server after the mark. Its state (the marks) lives in memory: a new leader starts marking anew.
type gc struct {
	c          *Controller
	period     time.Duration
	grace      time.Duration
	maxDeletes int
	limiter    *rate.Limiter
	triggerC   chan struct{}

	mu    sync.Mutex
	marks map[string]mark
}

type mark struct {
	reason Reason
	at     time.Time
}

func newGC(c *Controller, o Options) *gc {
	g := &gc{c: c, period: o.GCPeriod, grace: o.GCGrace, maxDeletes: o.GCMaxDeletes, triggerC: make(chan struct{}, 1),
		marks: map[string]mark{}}
	if g.period <= 0 {
		g.period = DefaultGCPeriod
	}
	if g.grace <= 0 {
		g.grace = g.period
	}
	if g.maxDeletes <= 0 {
		g.maxDeletes = DefaultGCMaxDeletes
	}
	r := o.GCDeleteRate
	if r <= 0 {
		r = DefaultGCDeleteRate
	}
	g.limiter = rate.NewLimiter(rate.Limit(r), max(int(2*r), 1))
	return g
}

// trigger asks for a pass soon (a node was deleted).
func (g *gc) trigger() {
	select {
	case g.triggerC <- struct{}{}:
	default:
	}
}

// run does a pass at once, then every period, after a trigger, and when a mark comes due.
func (g *gc) run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("gc")
	ctx = klog.NewContext(ctx, logger)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-g.triggerC:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		res, err := g.pass(ctx)
		switch {
		case err != nil:
			logger.Error(err, "GC pass failed")
		case res.marked+res.deleted+res.failed > 0:
			logger.Info("GC pass", "listed", res.listed, "marked", res.marked, "due", res.due, "deleted", res.deleted,
				"kept", res.kept, "failed", res.failed, "deferred", res.deferred)
		default:
			logger.V(4).Info("GC pass", "listed", res.listed)
		}
		next := g.period
		if res.deferred > 0 {
			next = min(next, 10*time.Second)
		}
		if d, ok := g.nextDue(); ok {
			next = min(next, max(d, time.Second))
		}
		timer.Reset(next)
	}
}

// nextDue is the time until the oldest mark reaches the grace period.
func (g *gc) nextDue() (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var first time.Time
	for _, m := range g.marks {
		if first.IsZero() || m.at.Before(first) {
			first = m.at
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return first.Add(g.grace).Sub(g.c.now()), true
}

// passResult counts what a pass did.
type passResult struct {
	listed   int // cluster-tagged ports
	marked   int // newly marked
	due      int // marked for the grace period
	deleted  int
	kept     int // due but found in use or changed at re-verification
	failed   int
	deferred int // due and verified, left for the next pass by the per-pass bound
}

type candidate struct {
	port   neutron.Port
	reason Reason
}

// pass lists the cluster's ports, marks the orphaned ones (against the informer caches), and
// deletes those marked at least one grace period ago that are still orphaned against a fresh
// listing of nodes and pods.
func (g *gc) pass(ctx context.Context) (passResult, error) {
	start := time.Now()
	var res passResult
	defer func() { g.c.metrics.gcPassDuration.Observe(time.Since(start).Seconds()) }()
	ports, err := g.c.nc.ListPorts(ctx, neutron.PortFilter{Tags: g.c.tags()})
	if err != nil {
		g.c.metrics.gcPasses.WithLabelValues("error").Inc()
		return res, err
	}
	res.listed = len(ports)
	live, err := g.cachedLive()
	if err != nil {
		g.c.metrics.gcPasses.WithLabelValues("error").Inc()
		return res, err
	}
	now := g.c.now()
	var due []candidate
	g.mu.Lock()
	orphans := map[string]bool{}
	for _, p := range ports {
		r := Orphan(p, live)
		if r == "" {
			continue
		}
		orphans[p.ID] = true
		m, ok := g.marks[p.ID]
		if !ok || m.reason != r {
			g.marks[p.ID] = mark{reason: r, at: now}
			res.marked++
			g.c.metrics.gcMarked.WithLabelValues(string(r)).Inc()
			continue
		}
		if now.Sub(m.at) >= g.grace {
			due = append(due, candidate{port: p, reason: r})
		}
	}
	for id := range g.marks {
		if !orphans[id] {
			delete(g.marks, id) // in use again, changed, or gone
		}
	}
	g.c.metrics.gcMarks.Set(float64(len(g.marks)))
	g.mu.Unlock()
	res.due = len(due)
	if len(due) == 0 {
		g.c.metrics.gcPasses.WithLabelValues("ok").Inc()
		return res, nil
	}

	// Re-verify against the API server itself, listed now, after every due mark was made.
	fresh, err := g.apiLive(ctx)
	if err != nil {
		g.c.metrics.gcPasses.WithLabelValues("error").Inc()
		return res, err
	}
	var act []candidate
	for _, cd := range due {
		if Orphan(cd.port, fresh) != cd.reason {
			res.kept++
			g.unmark(cd.port.ID)
			continue
		}
		act = append(act, cd)
	}
	if len(act) > g.maxDeletes {
		res.deferred = len(act) - g.maxDeletes
		act = act[:g.maxDeletes]
	}
	g.delete(ctx, act, fresh, &res)
	g.c.metrics.gcPasses.WithLabelValues("ok").Inc()
	return res, nil
}

func (g *gc) unmark(id string) {
	g.mu.Lock()
	delete(g.marks, id)
	g.c.metrics.gcMarks.Set(float64(len(g.marks)))
	g.mu.Unlock()
}

func (g *gc) cachedLive() (Live, error) {
	nodes, err := g.c.nodeLister.List(labels.Everything())
	if err != nil {
		return Live{}, err
	}
	pods, err := g.c.podLister.List(labels.Everything())
	if err != nil {
		return Live{}, err
	}
	return NewLive(nodes, pods), nil
}

// apiLive lists nodes and pods from the API server (a quorum read, page by page).
func (g *gc) apiLive(ctx context.Context) (Live, error) {
	var nodes []*corev1.Node
	var pods []*corev1.Pod
	nl := pager.New(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return g.c.kube.CoreV1().Nodes().List(ctx, o)
	})
	if err := nl.EachListItem(ctx, metav1.ListOptions{}, func(obj runtime.Object) error {
		nodes = append(nodes, obj.(*corev1.Node))
		return nil
	}); err != nil {
		return Live{}, fmt.Errorf("list nodes: %w", err)
	}
	pl := pager.New(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return g.c.kube.CoreV1().Pods("").List(ctx, o)
	})
	if err := pl.EachListItem(ctx, metav1.ListOptions{}, func(obj runtime.Object) error {
		p, _ := slimPod(obj.(*corev1.Pod))
		pods = append(pods, p.(*corev1.Pod))
		return nil
	}); err != nil {
		return Live{}, fmt.Errorf("list pods: %w", err)
	}
	return NewLive(nodes, pods), nil
}

// delete frees the verified ports: each is read again and judged again (a port changed or
// taken meanwhile is kept), detached from its trunk, and deleted only at the revision just
// verified (If-Match), so a port someone touches in between is never deleted.
func (g *gc) delete(ctx context.Context, act []candidate, live Live, res *passResult) {
	logger := klog.FromContext(ctx)
	if len(act) == 0 {
		return
	}
	// Subports are known from their trunks (a port does not name its trunk); nested ports keep
	// device_owner compute:kuryr where no agent rewrites it, so every port is looked up.
	trunks, err := g.c.nc.ListTrunks(ctx, neutron.TrunkFilter{})
	if err != nil {
		logger.Error(err, "GC: listing trunks failed; deleting nothing this pass")
		res.failed += len(act)
		return
	}
	trunkOf := neutron.SubportTrunks(trunks)
	perNode := map[string]int{}
	var mu sync.Mutex // res, perNode
	var wg sync.WaitGroup
	slots := make(chan struct{}, gcDeleteConcurrency)
	for _, cd := range act {
		if err := g.limiter.Wait(ctx); err != nil {
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			deleted, err := g.deleteOne(ctx, cd, live, trunkOf[cd.port.ID])
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				res.failed++
				g.c.metrics.gcFailed.WithLabelValues(string(cd.reason)).Inc()
				logger.Error(err, "GC: deleting port failed", "port", cd.port.ID, "reason", cd.reason)
				g.event(cd, corev1.EventTypeWarning, ReasonPortGCFailed, fmt.Sprintf("Deleting Neutron port %s (%s) failed: %v", cd.port.ID, cd.reason, err))
			case !deleted:
				res.kept++
				g.unmark(cd.port.ID)
			default:
				res.deleted++
				g.unmark(cd.port.ID)
				g.c.metrics.gcDeleted.WithLabelValues(string(cd.reason)).Inc()
				logger.Info("GC: port deleted", "port", cd.port.ID, "reason", cd.reason, "name", cd.port.Name, "node", nodeOf(cd.port))
				if cd.reason == ReasonNodeGone {
					perNode[nodeOf(cd.port)]++
				} else {
					g.event(cd, corev1.EventTypeNormal, ReasonLeakedPortDelete,
						fmt.Sprintf("Deleted Neutron port %s of pod %s, which no longer exists", cd.port.ID, cd.port.Name))
				}
			}
		}()
	}
	wg.Wait()
	for node, n := range perNode {
		ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: node}
		g.c.recorder.Eventf(ref, corev1.EventTypeNormal, ReasonNodePortsDeleted,
			"Deleted %d Neutron ports of node %s, which no longer exists", n, node)
	}
}

// deleteOne re-reads, re-judges, detaches and deletes one port. It reports false when the port
// turned out to be in use or changed (kept), true when it is gone.
func (g *gc) deleteOne(ctx context.Context, cd candidate, live Live, trunkID string) (bool, error) {
	for range 3 {
		p, err := g.c.nc.GetPort(ctx, cd.port.ID)
		if errors.Is(err, neutron.ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if Orphan(p, live) != cd.reason || p.Name != cd.port.Name || p.DeviceID != cd.port.DeviceID {
			return false, nil
		}
		if trunkID != "" {
			if err := g.c.nc.RemoveSubports(ctx, trunkID, []string{p.ID}); err != nil {
				return false, err
			}
			trunkID = ""
			continue // detaching may bump the revision (ML2 rewrites device_owner): read it again
		}
		err = g.c.nc.DeletePortIf(ctx, p.ID, p.RevisionNumber)
		if errors.Is(err, neutron.ErrRevisionMismatch) {
			continue
		}
		if err != nil {
			return false, err
		}
		return true, nil
	}
	return false, nil // it kept changing while we looked: leave it to a later pass
}

func (g *gc) event(cd candidate, typ, reason, msg string) {
	var ref *corev1.ObjectReference
	if cd.reason == ReasonNodeGone {
		ref = &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: nodeOf(cd.port)}
	} else {
		ns, _, _ := strings.Cut(cd.port.Name, "/")
		ref = &corev1.ObjectReference{APIVersion: "v1", Kind: "Namespace", Name: ns}
	}
	g.c.recorder.Event(ref, typ, reason, msg)
}
