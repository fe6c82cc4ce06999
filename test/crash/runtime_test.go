package crash

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/invariant"
)

// runtime plays the container runtime over the real kuryr-cni binary: it creates sandboxes (a
// netns each), runs ADD and DEL and retries them as kubelet does, and keeps the live containers
// (ADD succeeded, no DEL since) to check the agent against.
type runtime struct {
	t  *testing.T
	a  *agentProc
	ns string // the pods' namespace

	seq atomic.Int64
	// adds and dels count completed operations (dels: of live containers); addErrs and delErrs
	// the failed attempts that the runtime retried or gave up on.
	adds, dels, addErrs, delErrs atomic.Int64

	mu     sync.Mutex
	live   map[string]*cnirun.Pod // by container ID
	ipOf   map[string]string      // IP -> container ID
	macOf  map[string]string      // MAC -> container ID
	double []string
	errs   map[string]int // failed attempts by message, for the log
}

func newRuntime(t *testing.T, a *agentProc) *runtime {
	return &runtime{t: t, a: a, ns: fmt.Sprintf("crash-%05d", rand.IntN(100000)),
		live: map[string]*cnirun.Pod{}, ipOf: map[string]string{}, macOf: map[string]string{}, errs: map[string]int{}}
}

// sandbox creates a pod netns, removed at the end of the test if nothing removed it before.
func (r *runtime) sandbox() *cnirun.Pod {
	r.t.Helper()
	p, err := cnirun.NewPod(r.ns, fmt.Sprintf("p%d", r.seq.Add(1)))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { r.destroy(p) })
	return p
}

// destroy removes the sandbox's netns (idempotent).
func (r *runtime) destroy(p *cnirun.Pod) {
	if _, err := os.Stat(p.NS.Path()); err == nil {
		_ = p.Close()
	}
}

// add runs one ADD. On success the container is live; a result whose IP or MAC another live
// container holds is a double assignment.
func (r *runtime) add(ctx context.Context, p *cnirun.Pod) error {
	if _, err := r.a.runner.Add(ctx, p); err != nil {
		r.addErrs.Add(1)
		r.noteErr(err)
		return err
	}
	r.adds.Add(1)
	if len(p.Result.Interfaces) == 0 || len(p.Result.IPs) == 0 {
		return fmt.Errorf("ADD %s: result without interface or IP: %v", p.Name, p.Result)
	}
	ip, mac := p.Result.IPs[0].Address.IP.String(), p.Result.Interfaces[0].Mac
	r.mu.Lock()
	defer r.mu.Unlock()
	if other, ok := r.ipOf[ip]; ok && other != p.ContainerID {
		r.double = append(r.double, fmt.Sprintf("IP %s given to %s while %s holds it", ip, p.ContainerID, other))
	}
	if other, ok := r.macOf[mac]; ok && other != p.ContainerID {
		r.double = append(r.double, fmt.Sprintf("MAC %s given to %s while %s holds it", mac, p.ContainerID, other))
	}
	r.forgetLocked(p.ContainerID)
	r.live[p.ContainerID] = p
	r.ipOf[ip], r.macOf[mac] = p.ContainerID, p.ContainerID
	return nil
}

// noteErr counts a failed attempt by its message, with the names that vary masked.
func (r *runtime) noteErr(err error) {
	msg := varying.ReplaceAllString(err.Error(), "<id>")
	r.mu.Lock()
	r.errs[msg]++
	r.mu.Unlock()
}

// varying matches container IDs, netns names, pod names and port IDs in messages.
var varying = regexp.MustCompile(`(ctr-)?cnitest-[0-9a-f-]+|crash-[0-9]+/p[0-9]+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// errSummary is the failed attempts by message.
func (r *runtime) errSummary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for msg, n := range r.errs {
		fmt.Fprintf(&b, "\n  %5d x %s", n, msg)
	}
	return b.String()
}

func (r *runtime) forgetLocked(containerID string) {
	for ip, c := range r.ipOf {
		if c == containerID {
			delete(r.ipOf, ip)
		}
	}
	for mac, c := range r.macOf {
		if c == containerID {
			delete(r.macOf, mac)
		}
	}
	delete(r.live, containerID)
}

// del runs one DEL; on success the container is no longer live.
func (r *runtime) del(ctx context.Context, p *cnirun.Pod) error {
	if _, err := r.a.runner.Del(ctx, p); err != nil {
		r.delErrs.Add(1)
		r.noteErr(err)
		return err
	}
	r.mu.Lock()
	if _, ok := r.live[p.ContainerID]; ok {
		r.dels.Add(1) // a DEL of a sandbox whose ADD never succeeded is cleanup, not churn
	}
	r.forgetLocked(p.ContainerID)
	r.mu.Unlock()
	return nil
}

// delUntilDone retries DEL as kubelet does until it succeeds (with the agent down kuryr-cni tears
// the interface down itself, so only an agent that crashes mid-DEL fails it).
func (r *runtime) delUntilDone(ctx context.Context, p *cnirun.Pod, rng *rand.Rand) error {
	var err error
	for attempt := 0; attempt < 200 && ctx.Err() == nil; attempt++ {
		if err = r.del(ctx, p); err == nil {
			return nil
		}
		sleep(ctx, rng, 100, 400)
	}
	return fmt.Errorf("DEL %s never succeeded: %w", p.Name, errors.Join(err, ctx.Err()))
}

// addLikeKubelet brings a new sandbox up: ADD, retried on failure either on the same sandbox or,
// half of the time, by tearing the sandbox down (DEL, netns removed) as kubelet does before it
// creates a new one. It returns the live pod, or nil when the sandbox was given up.
func (r *runtime) addLikeKubelet(ctx context.Context, p *cnirun.Pod, rng *rand.Rand) (*cnirun.Pod, error) {
	for attempt := 0; attempt < 200 && ctx.Err() == nil; attempt++ {
		err := r.add(ctx, p)
		if err == nil {
			return p, nil
		}
		if rng.IntN(2) == 0 {
			if err := r.delUntilDone(ctx, p, rng); err != nil {
				return nil, err
			}
			r.destroy(p)
			return nil, nil
		}
		sleep(ctx, rng, 20, 150)
	}
	return nil, fmt.Errorf("ADD %s never succeeded: %w", p.Name, ctx.Err())
}

// teardown deletes a live pod: DEL then netns removal, or, one time in ten, the netns first (a
// runtime that lost the sandbox still calls DEL).
func (r *runtime) teardown(ctx context.Context, p *cnirun.Pod, rng *rand.Rand) error {
	if rng.IntN(10) == 0 {
		r.destroy(p)
		return r.delUntilDone(ctx, p, rng)
	}
	err := r.delUntilDone(ctx, p, rng)
	r.destroy(p)
	return err
}

// liveContainers is what the runtime holds, for the invariant checker.
func (r *runtime) liveContainers() []invariant.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]invariant.Container, 0, len(r.live))
	for _, p := range r.live {
		out = append(out, invariant.Container{ContainerID: p.ContainerID, IfName: "eth0", Netns: p.NS.Path()})
	}
	return out
}

func (r *runtime) livePods() []*cnirun.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*cnirun.Pod, 0, len(r.live))
	for _, p := range r.live {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *cnirun.Pod) int { return strings.Compare(a.ContainerID, b.ContainerID) })
	return out
}

func (r *runtime) doubles() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.double)
}

func sleep(ctx context.Context, rng *rand.Rand, minMS, maxMS int) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(minMS+rng.IntN(maxMS-minMS+1)) * time.Millisecond):
	}
}
