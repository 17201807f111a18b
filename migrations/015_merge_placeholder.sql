-- A placeholder on the majority branch only: the numbers 013-016 belong to migrations of other
-- branches of issues 19 and 20, and tern needs the sequence without gaps. Deleted when those
-- branches are merged (their own file takes the number).
SELECT 1;
