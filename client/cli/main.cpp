#include "client/cli/app.hpp"

int main(int argc, char** argv) {
  return litterbox::client::cli::run(argc, argv);
}
