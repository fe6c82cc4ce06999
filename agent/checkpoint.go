package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/kuryr-pools/kuryr/internal/crashpoint"
	"github.com/kuryr-pools/kuryr/pool"
)

// checkpointVersion changes when the file format does; an unknown version is refused, not guessed.
const checkpointVersion = 1

// Attachment is one (container, ifname) that holds a port: what DEL needs to tear it down without
// asking Neutron or Kubernetes.
type Attachment struct {
	ContainerID string     `json:"containerId"`
	IfName      string     `json:"ifName"`
	Netns       string     `json:"netns"`
	Pod         PodRef     `json:"pod"`
	Port        pool.Port  `json:"port"`
	Plug        PlugParams `json:"plug"`
	CreatedAt   time.Time  `json:"createdAt"`
	// Network is the CNI network name, for GC's valid-attachments matching.
	Network string `json:"network,omitempty"`
}

// PodRef names a pod.
type PodRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
}

// String is namespace/name, the name kuryr gives a pod's port.
func (p PodRef) String() string { return p.Namespace + "/" + p.Name }

// Cooling is a released port waiting out its cooldown: persisted so that a restart does not hand
// it out early.
type Cooling struct {
	Port       pool.Port `json:"port"`
	ReleasedAt time.Time `json:"releasedAt"`
}

// owner is the engine owner string of an attachment.
func owner(containerID, ifName string) string { return containerID + "/" + ifName }

// Owner returns the engine owner string of the attachment.
func (a *Attachment) Owner() string { return owner(a.ContainerID, a.IfName) }

type checkpointFile struct {
	Version     int           `json:"version"`
	Attachments []*Attachment `json:"attachments"`
	Cooling     []Cooling     `json:"cooling"`
}

// Checkpoint is the agent's record of which container uses which port, persisted atomically
// (temp file in the same directory, fsync, rename, fsync of the directory) before every change
// returns.
//
// Writes are group commits: a change is made in memory under mu, then waits for a write that
// started after it. One goroutine writes at a time, with mu released, so Get never waits for a
// disk; the changes made meanwhile share the next write and its fsyncs. A burst of N concurrent
// ADDs costs a few writes instead of N in a row under one lock (profiled: that lock serialised
// bursts at ~20 ms per ADD).
type Checkpoint struct {
	path string

	mu          sync.Mutex
	attachments map[string]encoded[*Attachment] // by owner
	cooling     map[string]encoded[Cooling]     // by port ID
	buf         bytes.Buffer                    // the file being written; only the writer touches it
	// writeHook, when set, is called right before the rename: tests kill the agent there.
	writeHook func()

	cond    sync.Cond  // on mu: a write finished
	writing bool       // a goroutine is writing the file (mu released meanwhile)
	next    *groupSync // the write that changes made from now on wait for (nil: none pending)
	writes  int        // file writes so far, for tests
}

// groupSync is one write of the file, shared by every change made before it took its snapshot.
type groupSync struct {
	done bool
	err  error
}

// removeKilledWrites removes the temporary files of checkpoint writes that a kill cut short (their
// deferred remove never ran): without it every such crash leaves one more. Only the agent that owns
// the checkpoint may call it, before it writes: another reader would remove a write in flight.
func removeKilledWrites(path string) {
	tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*"))
	for _, tmp := range tmps {
		_ = os.Remove(tmp)
	}
}

// OpenCheckpoint loads path, or starts empty when it does not exist.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	c := &Checkpoint{path: path, attachments: map[string]encoded[*Attachment]{}, cooling: map[string]encoded[Cooling]{},
		writeHook: crashpoint.Func("checkpoint-rename")}
	c.cond.L = &c.mu
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	var f checkpointFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("checkpoint %s is corrupt: %w", path, err)
	}
	if f.Version != checkpointVersion {
		return nil, fmt.Errorf("checkpoint %s has version %d, this agent reads version %d", path, f.Version, checkpointVersion)
	}
	for _, a := range f.Attachments {
		if a == nil || a.ContainerID == "" || a.IfName == "" || a.Port.ID == "" {
			return nil, fmt.Errorf("checkpoint %s holds an attachment without container, ifname or port", path)
		}
		e, err := encode(a)
		if err != nil {
			return nil, err
		}
		c.attachments[a.Owner()] = e
	}
	for _, cl := range f.Cooling {
		e, err := encode(cl)
		if err != nil {
			return nil, err
		}
		c.cooling[cl.Port.ID] = e
	}
	return c, nil
}

// Get returns the attachment of (containerID, ifName).
func (c *Checkpoint) Get(containerID, ifName string) (*Attachment, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.attachments[owner(containerID, ifName)]
	return e.v, ok
}

// Attachments returns every attachment, sorted by owner.
func (c *Checkpoint) Attachments() []*Attachment {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Attachment, 0, len(c.attachments))
	for _, e := range c.attachments {
		out = append(out, e.v)
	}
	slices.SortFunc(out, func(a, b *Attachment) int {
		if a.Owner() < b.Owner() {
			return -1
		}
		if a.Owner() > b.Owner() {
			return 1
		}
		return 0
	})
	return out
}

// CoolingPorts returns the persisted cooling ports.
func (c *Checkpoint) CoolingPorts() []Cooling {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Cooling, 0, len(c.cooling))
	for _, e := range c.cooling {
		out = append(out, e.v)
	}
	slices.SortFunc(out, func(a, b Cooling) int {
		if a.Port.ID < b.Port.ID {
			return -1
		}
		return 1
	})
	return out
}

// encoded is a checkpoint entry with its JSON, taken once when the entry is recorded: a write
// joins the encodings instead of encoding every entry again, which made the agent's garbage and
// CPU grow with its pods on every ADD and DEL.
type encoded[T any] struct {
	v    T
	json []byte
}

func encode[T any](v T) (encoded[T], error) {
	b, err := json.Marshal(v)
	if err != nil {
		return encoded[T]{}, fmt.Errorf("encode checkpoint entry: %w", err)
	}
	return encoded[T]{v: v, json: b}, nil
}

// Put records an attachment and persists it before returning. The attachment must not be modified
// afterwards: its encoding is taken now.
func (c *Checkpoint) Put(a *Attachment) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, err := encode(a)
	if err != nil {
		return err
	}
	key := a.Owner()
	prev, had := c.attachments[key]
	c.attachments[key] = e
	if err := c.persistLocked(); err != nil {
		if had {
			c.attachments[key] = prev
		} else {
			delete(c.attachments, key)
		}
		return err
	}
	return nil
}

// Release removes an attachment and records its port as cooling, in one persisted step.
func (c *Checkpoint) Release(containerID, ifName string, at time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := owner(containerID, ifName)
	a, ok := c.attachments[key]
	if !ok {
		return nil
	}
	cl, err := encode(Cooling{Port: a.v.Port, ReleasedAt: at})
	if err != nil {
		return err
	}
	delete(c.attachments, key)
	c.cooling[a.v.Port.ID] = cl
	if err := c.persistLocked(); err != nil {
		c.attachments[key] = a
		delete(c.cooling, a.v.Port.ID)
		return err
	}
	return nil
}

// Drop removes an attachment without cooling its port (ADD rolled back before the pod used it).
func (c *Checkpoint) Drop(containerID, ifName string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := owner(containerID, ifName)
	a, ok := c.attachments[key]
	if !ok {
		return nil
	}
	delete(c.attachments, key)
	if err := c.persistLocked(); err != nil {
		c.attachments[key] = a
		return err
	}
	return nil
}

// Cooled forgets cooling ports that the pool has taken back (recycled or deleted).
func (c *Checkpoint) Cooled(portIDs ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := false
	for _, id := range portIDs {
		if _, ok := c.cooling[id]; ok {
			delete(c.cooling, id)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return c.persistLocked()
}

// persistLocked returns once the state as it is now (and so the caller's change) is on disk, or the
// write that held it failed. Called with mu held; mu is released while the file is written.
func (c *Checkpoint) persistLocked() error {
	g := c.next
	if g == nil {
		g = &groupSync{}
		c.next = g
	}
	for c.writing && !g.done {
		c.cond.Wait()
	}
	if g.done {
		return g.err // another goroutine's write carried this change
	}
	// Nobody writes and g is not written: write the state, which holds every change of g. Changes
	// made from here on wait for the next write.
	c.next = nil
	c.writing = true
	c.writes++
	g.err = errors.New("checkpoint write interrupted") // unless it returns
	defer func() {
		c.writing = false
		g.done = true
		c.cond.Broadcast()
	}()
	crashpoint.Hit("checkpoint-write")
	c.encodeLocked()
	var err error
	func() {
		c.mu.Unlock()
		defer c.mu.Lock() // the callers unlock, even when a test's hook panics
		err = writeFileAtomic(c.path, bytes.NewReader(c.buf.Bytes()), 0o600, c.writeHook)
	}()
	g.err = err
	return err
}

// encodeLocked writes the checkpointFile of the state into c.buf from the entries' encodings.
func (c *Checkpoint) encodeLocked() {
	c.buf.Reset()
	fmt.Fprintf(&c.buf, `{"version":%d,"attachments":[`, checkpointVersion)
	joinJSON(&c.buf, c.attachments)
	c.buf.WriteString(`],"cooling":[`)
	joinJSON(&c.buf, c.cooling)
	c.buf.WriteString("]}")
}

func joinJSON[T any](b *bytes.Buffer, entries map[string]encoded[T]) {
	first := true
	for _, e := range entries {
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.Write(e.json)
	}
}

// writeFileAtomic replaces path with what src holds so that a crash, or a reader at any moment,
// sees either the old or the new file whole, with its mode: write a temp file in the same directory,
// chmod and fsync it, rename it over path, fsync the directory.
func writeFileAtomic(path string, src io.Reader, mode os.FileMode, beforeRename func()) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // a no-op once renamed
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmpName, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmpName, err)
	}
	if beforeRename != nil {
		beforeRename()
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmpName, path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
