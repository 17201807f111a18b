-- One change stream per publication owner (issue 16): a tree's publication belongs to the role
-- that built it, and a publication its owner drops or alters can stop only the stream of that
-- owner's trees. Each tree records its group's slot and what its publication looked like when
-- it was built, so a publication changed since can be told from one that is intact.
ALTER TABLE ace.mtrees
    ADD COLUMN pub_owner   oid,     -- pg_publication.pubowner at build: the tree's stream group
    ADD COLUMN slot_name   text,    -- the group's slot: ace_mtree_<database oid>_<pub_owner>
    ADD COLUMN pub_xmin    xid,     -- xmin of the publication's pg_publication row at build
    ADD COLUMN pubrel_xmin xid,     -- xmin of its pg_publication_rel row of the table at build
    ADD COLUMN pub_columns text[];  -- the publication's column list at build (NULL: every column)

-- Trees of the single-slot releases have neither yet: their agent fills them in
-- (ace.mtree_adopt_trees) and moves them onto their owner's slot without losing a change.

CREATE INDEX mtrees_slot ON ace.mtrees (slot_name);
