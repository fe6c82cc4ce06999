package agent

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// PortAnnotation is the pod annotation the agent writes with the pod's port.
const PortAnnotation = "kuryr.openstack.org/port"

// PortAnnotationValue is the JSON in PortAnnotation.
type PortAnnotationValue struct {
	PortID string   `json:"portId"`
	MAC    string   `json:"mac"`
	IPs    []string `json:"ips"`
	VLAN   int      `json:"vlan,omitempty"`
	IfName string   `json:"ifName"`
}

// KubeNotifier writes Events and the port annotation in the background: the ADD path only queues,
// and a slow or unreachable API server delays the bookkeeping, never a pod.
type KubeNotifier struct {
	node     string
	events   bool // [kubernetes] use_events
	client   kubernetes.Interface
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[string]
	pending  *pendingAnnotations
}

type pendingAnnotations struct {
	mu    sync.Mutex
	items map[string]annotationJob
}

type annotationJob struct {
	pod   PodRef
	value string
}

// NewKubeNotifier returns a notifier for the pods of this node; Run starts its workers.
func NewKubeNotifier(client kubernetes.Interface, node string, events bool) *KubeNotifier {
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return &KubeNotifier{
		node:     node,
		events:   events,
		client:   client,
		recorder: broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kuryr-agent", Host: node}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pod-annotations"}),
		pending: &pendingAnnotations{items: map[string]annotationJob{}},
	}
}

func (p *pendingAnnotations) put(key string, job annotationJob) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.items[key] = job
}

func (p *pendingAnnotations) get(key string) (annotationJob, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, ok := p.items[key]
	return j, ok
}

// done forgets job unless a newer one for the same pod replaced it meanwhile.
func (p *pendingAnnotations) done(key string, job annotationJob) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.items[key]; ok && cur == job {
		delete(p.items, key)
	}
}

// Event records a Kubernetes Event on the pod (asynchronous: the recorder has its own queue).
func (n *KubeNotifier) Event(pod PodRef, eventType, reason, message string) {
	if !n.events {
		return
	}
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: types.UID(pod.UID)}
	n.recorder.Event(ref, eventType, reason, message)
}

// Attached queues the port annotation of the pod.
func (n *KubeNotifier) Attached(pod PodRef, a *Attachment) {
	v := PortAnnotationValue{PortID: a.Port.ID, MAC: a.Port.MAC, VLAN: a.Port.VLAN, IfName: a.IfName}
	for _, ip := range a.Port.FixedIPs {
		v.IPs = append(v.IPs, ip.IP)
	}
	data, _ := json.Marshal(v)
	key := pod.Namespace + "/" + pod.Name
	n.pending.put(key, annotationJob{pod: pod, value: string(data)})
	n.queue.Add(key)
}

// Run writes queued annotations until ctx is done.
func (n *KubeNotifier) Run(ctx context.Context, workers int) {
	defer n.queue.ShutDown()
	for i := 0; i < workers; i++ {
		go wait.UntilWithContext(ctx, n.worker, time.Second)
	}
	<-ctx.Done()
}

func (n *KubeNotifier) worker(ctx context.Context) {
	for n.next(ctx) {
	}
}

func (n *KubeNotifier) next(ctx context.Context) bool {
	key, shutdown := n.queue.Get()
	if shutdown {
		return false
	}
	defer n.queue.Done(key)
	job, ok := n.pending.get(key)
	if !ok {
		n.queue.Forget(key)
		return true
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{PortAnnotation: job.value}}})
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := n.client.CoreV1().Pods(job.pod.Namespace).Patch(pctx, job.pod.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kuryr-agent"})
	cancel()
	switch {
	case err == nil:
		n.pending.done(key, job)
		n.queue.Forget(key)
	case apierrors.IsNotFound(err):
		n.pending.done(key, job) // the pod is gone: nothing to annotate
		n.queue.Forget(key)
	default:
		klog.FromContext(ctx).V(2).Info("pod annotation failed, will retry", "pod", key, "error", err)
		n.queue.AddRateLimited(key)
	}
	return true
}
