package disk

// CheckWritable proves that the store directory can be written now, by
// creating and removing a temporary file in it.
func (s *Store) CheckWritable() error {
	// An empty file needs an inode but no data block: a full disk would
	// still take it. An ADD writes a lease, an index entry and a cursor,
	// each through a temporary file of at least one block: the probe needs
	// as many blocks as that.
	probe := make([]byte, 16<<10)
	if err := s.writeFile("", tempPrefix+"probe", probe, false); err != nil {
		return s.unavailable("write probe file", err)
	}
	if err := s.removeFile("", tempPrefix+"probe"); err != nil {
		return s.unavailable("remove probe file", err)
	}
	return nil
}
