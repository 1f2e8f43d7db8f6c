#!/usr/bin/perl
# Adapts the three recovery tests that look into a node's archive directory themselves (it is a
# pitr repository now), in the copies under RUN_DIR. Each replaced text must be found exactly
# once; a test whose text changed fails the run here rather than testing something else.
#   002_archiving:               waits for 00000002.history with pg_stat_file -> pitr_archived
#   025_stuck_on_old_timeline:   archive_command copying history files only -> pitr, history only
#   043_no_contrecord_switch:    copies a crafted segment into the archive -> pitr_push
use strict;
use warnings;

my $run = shift or die "usage: adapt-tests.pl RUN_DIR\n";

sub adapt {
	my ($test, $from, $to) = @_;
	my $file = "$run/recovery/t/$test.pl";
	return unless -f $file;    # not selected for this run
	open my $in, '<', $file or die "$file: $!\n";
	my $text = do { local $/; <$in> };
	close $in;
	my $n = () = $text =~ /\Q$from\E/g;
	die "adapt-tests.pl: expected one occurrence of <<$from>> in $file, found $n\n"
	  unless $n == 1;
	$text =~ s/\Q$from\E/$to/;
	open my $out, '>', $file or die "$file: $!\n";
	print $out $text;
	close $out;
}

adapt('002_archiving', <<'OLD', <<'NEW');
$caughtup_query =
  "SELECT size IS NOT NULL FROM pg_stat_file('$primary_archive/00000002.history', true)";
$node_primary->poll_query_until('postgres', $caughtup_query)
  or die "Timed out while waiting for archiving of 00000002.history";
OLD
for (my $tries = 0; !$node_primary->pitr_archived('00000002.history'); $tries++)
{
	die "Timed out while waiting for archiving of 00000002.history"
	  if $tries > 10 * $PostgreSQL::Test::Utils::timeout_default;
	select(undef, undef, undef, 0.1);
}
NEW

adapt('025_stuck_on_old_timeline',
	q{archive_command = '"$perlbin" "$FindBin::RealBin/cp_history_files" "%p" "$archivedir_primary/%f"'},
	q{archive_command = 'if expr "%f" : ".*history" >/dev/null; then "$ENV{PITR_TAP_BIN}" --repo "$archivedir_primary/pitr-repo" archive-push "%p"; fi'}
);

adapt('043_no_contrecord_switch',
	q{copy($wal_file, $primary->archive_dir);},
	q{$primary->pitr_push($wal_file);});
