package ctl

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/atomicfile"
)

// keyFile is the JSON file holding a token-gated community's hash-ratchet
// material: the owner's sending state (which build advances and saves) and
// any older keys readers need.
type keyFile struct {
	InstallationID string                `json:"installationId,omitempty"`
	State          *archive.RatchetState `json:"state,omitempty"`
	Keys           []archive.RatchetKey  `json:"keys,omitempty"`
}

func loadKeys(path string, c archive.CommunityID) (*archive.HashRatchet, *keyFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if kf.State == nil && len(kf.Keys) == 0 {
		return nil, nil, fmt.Errorf("key file %s holds no key", path)
	}
	return &archive.HashRatchet{Community: c, InstallationID: kf.InstallationID, State: kf.State, Keys: kf.Keys}, &kf, nil
}

// saveKeys persists the advanced ratchet state, replacing the file atomically.
func saveKeys(path string, kf *keyFile) error {
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}
