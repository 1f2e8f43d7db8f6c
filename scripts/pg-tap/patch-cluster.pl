#!/usr/bin/perl
# Patches a copy of PostgreSQL::Test::Cluster so that enable_archiving / enable_restoring use
# pitr: each node archives with `pitr archive-push` into a pitr repository in its archive
# directory (`<archive_dir>/pitr-repo`, created by `pitr init`), and restores with
# `pitr archive-get` from its root node's. Also adds `pitr_repo` and `pitr_archived` for the
# tests that looked into the archive directory. Dies if the code it replaces is not found.
use strict;
use warnings;

my $file = shift or die "usage: patch-cluster.pl Cluster.pm\n";
open my $in, '<', $file or die "$file: $!\n";
my $text = do { local $/; <$in> };
close $in;

sub replace_once {
	my ($from, $to) = @_;
	my $n = () = $text =~ /\Q$from\E/g;
	die "patch-cluster.pl: expected one occurrence of <<$from>> in $file, found $n\n"
	  unless $n == 1;
	$text =~ s/\Q$from\E/$to/;
}

replace_once(q{: qq{cp "%p" "$path/%f"};},
	q{: PostgreSQL::Test::Cluster::pitr_command($path, 'archive-push "%p"');});
replace_once(q{: qq{cp "$path/%f" "%p"};},
	q{: PostgreSQL::Test::Cluster::pitr_command($path, 'archive-get "%f" "%p"');});

# Stop every node before removing any node's directory: a standby still running would otherwise
# ask its root node's removed repository for a file, and pitr (rightly) answers "no repository"
# with exit 255, not "absent", so the standby shuts down and its `pg_ctl stop` fails.
replace_once(qq|\tforeach my \$node (\@all_nodes)\n\t{\n\t\t\$node->teardown_node;\n|,
	qq|\t\$_->teardown_node for \@all_nodes;\n\tforeach my \$node (\@all_nodes)\n\t{\n\t\t\$node->teardown_node;\n|);

my $helpers = <<'PERL';

# --- pitr (added by scripts/pg-tap/patch-cluster.pl) ---
{
package PostgreSQL::Test::Cluster;

# The pitr repository of the node whose archive directory is $path, created on first use.
sub pitr_repo
{
	my ($path) = @_;
	my $repo = "$path/pitr-repo";
	if (!-d $repo)
	{
		system($ENV{PITR_TAP_BIN}, '--repo', $repo, 'init') == 0
		  or die "pitr init --repo $repo failed";
	}
	return $repo;
}

# An archive_command / restore_command running pitr on $path's repository; noted in
# $PITR_TAP_TRACE so that the runner can tell the patch was used.
sub pitr_command
{
	my ($path, $args) = @_;
	my $repo = pitr_repo($path);
	if (my $trace = $ENV{PITR_TAP_TRACE})
	{
		open my $fh, '>>', $trace or die "$trace: $!";
		print $fh "$args $repo\n";
		close $fh;
	}
	return qq{"$ENV{PITR_TAP_BIN}" --repo "$repo" $args};
}

# Whether the node's repository holds the WAL file (segment or history) $name.
sub pitr_archived
{
	my ($self, $name) = @_;
	my $repo = pitr_repo($self->archive_dir);
	my $dest = $self->basedir . "/pitr-probe-$name";
	unlink $dest;
	my $rc = system($ENV{PITR_TAP_BIN}, '--repo', $repo, 'archive-get', $name, $dest) >> 8;
	unlink $dest;
	die "pitr archive-get $name from $repo failed with exit code $rc" if $rc > 1;
	return $rc == 0;
}

# Stores the file $file in the node's repository, as the archiver would.
sub pitr_push
{
	my ($self, $file) = @_;
	my $repo = pitr_repo($self->archive_dir);
	system($ENV{PITR_TAP_BIN}, '--repo', $repo, 'archive-push', $file) == 0
	  or die "pitr archive-push $file into $repo failed";
	return;
}
}
PERL

$text =~ s/\n1;\s*\z/$helpers\n1;\n/ or die "patch-cluster.pl: no final '1;' in $file\n";

open my $out, '>', $file or die "$file: $!\n";
print $out $text;
close $out;
