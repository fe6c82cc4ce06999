package pool

import "fmt"

// Discard is Release for a pool that does not reuse ports (the noop driver), and Abort for it too:
// the in-use port goes straight to deleting, busy, and is returned for the driver to delete. Its
// owner holds nothing afterwards. Deleted or DeleteFailed report back as for a planned deletion.
func (e *Engine) Discard(portID string) (Port, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en := e.ports[portID]
	if en == nil {
		return Port{}, fmt.Errorf("discard port %s: %w", portID, ErrUnknownPort)
	}
	if en.state != StateInUse {
		return Port{}, fmt.Errorf("discard port %s: it is %s, not in use: %w", portID, en.state, ErrState)
	}
	delete(e.owners, en.owner)
	en.owner, en.want = "", ""
	return e.markLocked(en, StateDeleting, e.clock.Now()), nil
}
